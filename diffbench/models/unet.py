"""UNet noise predictor eps_theta(x_t, t) for DDPM / DDIM (Ho et al. 2020; Ronneberger et al. 2015).

Residual blocks (GroupNorm -> SiLU -> conv, twice) receive a projection of one shared sinusoidal
timestep embedding, computed once per forward; single-head self-attention follows the blocks of
the chosen levels. There is one skip connection per resolution level. Sizes need not be powers
of two: downsampling is a stride-2 3x3 conv with padding 1 (28 -> 14 -> 7, 7 -> 4) and the up
path interpolates (nearest) to the skip's exact size. Width grows as resolution falls, where
convolutions are cheap, and the full-resolution level stays thin.

With ``interval_time`` the network also takes a second time ``r`` (MeanFlow's average velocity
u(z, r, t), Geng et al. 2025, arXiv 2505.13447, sec. 4: conditioned on t and the interval
t - r): a second embedding of ``t - r`` through its own MLP is added before the shared SiLU. That
MLP's last layer starts at zero, so a MeanFlow network started from a flow network's weights
reproduces it for every ``r``; ``r`` omitted means 0, the jump to the data.
"""

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffbench.core.errors import InputError
from diffbench.models.embedding import timestep_embedding


@dataclass(frozen=True)
class UNetConfig:
    """UNet hyper-parameters; level ``i`` has ``base_channels * channel_mults[i]`` channels."""

    in_channels: int = 1
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (-1,)  # level indices, negative from the lowest resolution
    num_groups: int = 8
    dropout: float = 0.0
    interval_time: bool = False  # MeanFlow: a second time input r (see the module docstring)

    @classmethod
    def pixel(cls) -> "UNetConfig":
        """Default for 1x28x28 MNIST pixels (28 -> 14 -> 7, attention at 7x7)."""
        return cls()

    @classmethod
    def latent(cls) -> "UNetConfig":
        """Default for the VAE's 4x7x7 latents (7 -> 4, attention at 4x4)."""
        return cls(in_channels=4, image_size=7, base_channels=64, channel_mults=(1, 2))


class ResBlock(nn.Module):
    """Residual block; with ``emb_dim`` > 0 a timestep embedding is added after the first conv."""

    def __init__(self, cin: int, cout: int, emb_dim: int, num_groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout) if emb_dim else None
        self.norm2 = nn.GroupNorm(num_groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # Sums land in the fresh conv outputs (a conv's backward never needs its output), and
        # without autograd SiLU overwrites the norm's output too: bitwise the same result, with
        # fewer large allocations (measured: the batch-64 forward about 8% faster on the CPU).
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        if self.emb is not None:
            h.add_(self.emb(emb)[:, :, None, None])
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        return h.add_(self.skip(x))


class SelfAttention(nn.Module):
    """Single-head self-attention over spatial positions, with a residual connection."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # [b, 1, h*w, c]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Stage(nn.Module):
    """``n`` residual blocks (``cin`` -> ``cout``), each followed by self-attention if ``attn``."""

    def __init__(self, cin: int, cout: int, n: int, attn: bool, **block_kw):
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(cin if i == 0 else cout, cout, **block_kw) for i in range(n)
        )
        self.attn = nn.ModuleList(
            SelfAttention(cout, block_kw["num_groups"]) if attn else nn.Identity() for _ in range(n)
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        for res, attn in zip(self.res, self.attn, strict=True):
            h = attn(res(h, emb))
        return h


class UNet(nn.Module):
    """eps_theta(x_t, t): x [B, C, H, W] float, t [B] long -> predicted noise [B, C, H, W]
    (or v, a flow velocity; with ``interval_time``, ``(x, t, r)`` -> an average velocity)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        n = len(chans)
        if any(not -n <= i < n for i in cfg.attention_levels):
            raise InputError(f"attention_levels {cfg.attention_levels} out of range for {n} levels")
        attn = {i % n for i in cfg.attention_levels}
        emb_dim = 4 * cfg.base_channels
        stage = partial(
            Stage,
            n=cfg.num_res_blocks,
            emb_dim=emb_dim,
            num_groups=cfg.num_groups,
            dropout=cfg.dropout,
        )

        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.interval_mlp = None
        if cfg.interval_time:
            self.interval_mlp = nn.Sequential(
                nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
            )
            nn.init.zeros_(self.interval_mlp[-1].weight)
            nn.init.zeros_(self.interval_mlp[-1].bias)
        self.stem = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList(
            stage(chans[max(i - 1, 0)], c, attn=i in attn) for i, c in enumerate(chans)
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i], 3, stride=2, padding=1) for i in range(n - 1)
        )
        self.mid = stage(chans[-1], chans[-1], n=1, attn=n - 1 in attn)
        # up[j] serves level n-1-j: input = deeper features concatenated with that level's skip
        self.up = nn.ModuleList(
            stage(chans[min(i + 1, n - 1)] + chans[i], chans[i], attn=i in attn)
            for i in reversed(range(n))
        )
        self.out = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, chans[0]),
            nn.SiLU(),
            nn.Conv2d(chans[0], cfg.in_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor | None = None
    ) -> torch.Tensor:
        size = (self.cfg.image_size, self.cfg.image_size)
        if x.shape[1] != self.cfg.in_channels or tuple(x.shape[-2:]) != size:
            raise InputError(
                f"expected [B, {self.cfg.in_channels}, {size[0]}, {size[1]}], got {tuple(x.shape)}"
            )
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels).to(x.dtype))
        if self.interval_mlp is not None:  # the interval t - r; r = 0 when omitted
            interval = t if r is None else t - r
            emb = emb + self.interval_mlp(
                timestep_embedding(interval, self.cfg.base_channels).to(x.dtype))
        elif r is not None:
            raise InputError("this UNet takes one time input; r needs model.interval_time: true")
        emb = F.silu(emb)
        h = self.stem(x)
        skips = []
        for i, stage in enumerate(self.down):
            if i > 0:
                h = self.downsample[i - 1](h)
            h = stage(h, emb)
            skips.append(h)
        h = self.mid(h, emb)
        for stage in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = stage(torch.cat([h, skip], dim=1), emb)
        return self.out(h)

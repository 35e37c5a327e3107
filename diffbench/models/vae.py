"""KL-regularised convolutional autoencoder (Kingma & Welling 2014; the "AutoencoderKL" of
Rombach et al. 2022) mapping 1x28x28 images to latents for latent diffusion: C x 7 x 7 with
the default two downsamplings, C x 14 x 14 with one (the shipped 4x14x14, configs/train_vae.yaml).

``decode`` ends in ``tanh``, so reconstructions always lie in [-1, 1] (clamping them is a no-op).
``scale_factor`` is a persistent buffer (default 1.0) that training sets to 1 / std of the training
latents; the diffusion model works on ``z * scale_factor`` and decodes ``decode(z / scale_factor)``.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffbench.models.unet import Stage


@dataclass(frozen=True)
class VAEConfig:
    """VAE hyper-parameters: ``len(channel_mults) - 1`` stride-2 downsamplings."""

    in_channels: int = 1
    image_size: int = 28
    latent_channels: int = 4
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    num_groups: int = 8


class VAE(nn.Module):
    """Encoder x -> (mean, logvar) of a diagonal Gaussian posterior; decoder z -> x_hat."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        self.sizes = [cfg.image_size]  # spatial size per level: a stride-2 conv maps s -> ceil(s/2)
        for _ in chans[1:]:
            self.sizes.append((self.sizes[-1] + 1) // 2)
        kw = dict(n=cfg.num_res_blocks, attn=False, emb_dim=0, num_groups=cfg.num_groups)

        self.enc_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.enc = nn.ModuleList(Stage(chans[max(i - 1, 0)], c, **kw) for i, c in enumerate(chans))
        self.enc_down = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in chans[:-1])
        self.enc_out = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, chans[-1]),
            nn.SiLU(),
            nn.Conv2d(chans[-1], 2 * cfg.latent_channels, 3, padding=1),
        )
        self.dec_in = nn.Conv2d(cfg.latent_channels, chans[-1], 3, padding=1)
        # dec[j] serves level n-1-j
        self.dec = nn.ModuleList(
            Stage(chans[min(i + 1, len(chans) - 1)], chans[i], **kw)
            for i in reversed(range(len(chans)))
        )
        self.dec_out = nn.Sequential(
            nn.GroupNorm(cfg.num_groups, chans[0]),
            nn.SiLU(),
            nn.Conv2d(chans[0], cfg.in_channels, 3, padding=1),
            nn.Tanh(),
        )
        self.register_buffer("scale_factor", torch.tensor(1.0), persistent=True)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one latent."""
        return (self.cfg.latent_channels, self.sizes[-1], self.sizes[-1])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, H, W] -> posterior mean and log-variance, each [B, *latent_shape]."""
        h = self.enc_in(x)
        for i, stage in enumerate(self.enc):
            if i > 0:
                h = self.enc_down[i - 1](h)
            h = stage(h)
        mean, logvar = self.enc_out(h).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, *latent_shape] -> reconstruction [B, C, H, W] in [-1, 1]."""
        h = self.dec_in(z)
        for j, stage in enumerate(self.dec):
            if j > 0:
                h = F.interpolate(h, size=self.sizes[len(self.dec) - 1 - j], mode="nearest")
            h = stage(h)
        return self.dec_out(h)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass: returns (x_hat, mean, logvar), noise drawn from ``generator``."""
        mean, logvar = self.encode(x)
        device = generator.device if generator is not None else x.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=x.dtype)
        z = mean + torch.exp(0.5 * logvar) * noise.to(x.device)
        return self.decode(z), mean, logvar

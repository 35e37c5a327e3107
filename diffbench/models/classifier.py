"""Small MNIST CNN classifier, used for accuracy checks and as the feature extractor of a Frechet
distance (Heusel et al. 2017, with this network in place of Inception).

With ``noise_aware=True`` it also takes the diffusion timestep t and modulates every GroupNorm by
it (adaptive GroupNorm, as in the noisy classifiers of Dhariwal & Nichol 2021).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffbench.core.errors import InputError
from diffbench.models.embedding import timestep_embedding


@dataclass(frozen=True)
class ClassifierConfig:
    """Stage ``i`` runs ``convs_per_stage`` 3x3 convs at ``channels[i]`` after a 2x max-pool
    (none before stage 0); features are the global average of the last stage."""

    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 2
    num_classes: int = 10
    num_groups: int = 8
    dropout: float = 0.1
    noise_aware: bool = False
    time_dim: int = 32  # sinusoidal embedding size (used only when noise_aware)


class ConvBlock(nn.Module):
    """3x3 conv -> GroupNorm (optionally FiLM-modulated by an embedding) -> SiLU."""

    def __init__(self, cin: int, cout: int, num_groups: int, emb_dim: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(num_groups, cout)
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return F.silu(h)


class Classifier(nn.Module):
    """x [B, C, 28, 28] (and t [B] if noise-aware) -> logits [B, num_classes]."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        emb_dim = 4 * cfg.time_dim if cfg.noise_aware else 0
        self.time_mlp = (
            nn.Sequential(nn.Linear(cfg.time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if cfg.noise_aware
            else None
        )
        ins = (cfg.in_channels, *cfg.channels[:-1])
        self.stages = nn.ModuleList(
            nn.ModuleList(
                ConvBlock(cin if j == 0 else c, c, cfg.num_groups, emb_dim)
                for j in range(cfg.convs_per_stage)
            )
            for cin, c in zip(ins, cfg.channels, strict=True)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.channels[-1], cfg.num_classes)

    @property
    def feature_dim(self) -> int:
        """Size of the vectors returned by ``features``."""
        return self.cfg.channels[-1]

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate features [B, feature_dim] (global average pool of the last stage)."""
        if self.cfg.noise_aware and t is None:
            raise InputError("a noise-aware classifier needs the timestep t")
        if not self.cfg.noise_aware and t is not None:
            raise InputError("t given to a classifier that is not noise-aware")
        emb = None
        if self.time_mlp is not None:
            emb = F.silu(self.time_mlp(timestep_embedding(t, self.cfg.time_dim).to(x.dtype)))
        h = x
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = F.max_pool2d(h, 2)
            for block in stage:
                h = block(h, emb)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.dropout(self.features(x, t)))

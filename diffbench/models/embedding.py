"""Sinusoidal timestep embeddings (Vaswani et al. 2017, "Attention is all you need";
Ho et al. 2020).

Layout matches diffusers' ``get_timestep_embedding(t, dim, flip_sin_to_cos=True,
downscale_freq_shift=0)``: cosines in the first half, sines in the second, at frequencies
``max_period ** (-i / (dim // 2))`` for ``i = 0 .. dim // 2 - 1``.
"""

import math

import torch
import torch.nn.functional as F

from diffbench.core.errors import InputError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Embed integer timesteps ``t`` [B] as float32 [B, dim]; an odd ``dim`` is zero-padded."""
    if t.dim() != 1:
        raise InputError(f"t must have shape [B], got {tuple(t.shape)}")
    if dim < 2:
        raise InputError(f"dim must be >= 2, got {dim}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    args = t.float()[:, None] * torch.exp(exponent / half)[None, :]
    return F.pad(torch.cat([torch.cos(args), torch.sin(args)], dim=-1), (0, dim % 2))

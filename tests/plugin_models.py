"""Model factories a user might name in a compare config (``plugin_models:make_eps_model``):
plain ``nn.Module``s ``model(x_t, t) -> eps``, nothing from diffbench."""

from __future__ import annotations

import torch
from torch import nn


class TinyEps(nn.Module):
    """Two convolutions and a timestep bias: a network shaped like any eps predictor."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, channels, 3, padding=1)
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t) + (t.to(x_t.dtype) / 1000).view(-1, 1, 1, 1)


def make_eps_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyEps()


class TwoChannels(nn.Module):
    """Returns eps with two channels for one: not the protocol's shape."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([x_t, x_t], dim=1)


def make_wrong_shape() -> nn.Module:
    return TwoChannels()


not_a_factory = 42


class NanLate(TinyEps):
    """TinyEps whose prediction turns NaN below timestep 200: a network that diverges late."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = super().forward(x_t, t)
        return torch.where((t < 200).view(-1, 1, 1, 1), torch.nan, eps)


def make_nan_model() -> nn.Module:
    torch.manual_seed(0)
    return NanLate()


def make_other_eps_model() -> nn.Module:
    """TinyEps with other weights: a second plug-in network of the same shape."""
    torch.manual_seed(1)
    return TinyEps()

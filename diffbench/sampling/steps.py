"""What one call of a sampler steps through: the :class:`Timestep` each step receives, the
image-to-image start's checks, and seeded noise."""

from __future__ import annotations

from numbers import Real

import torch
from torch import Tensor

from diffbench.core.errors import InputError

VARIANCES = ("fixed_small", "fixed_large")
STARTS = ("exact", "diffusers")
"""Where image-to-image starts: see :meth:`Sampler.plan`. ``"exact"`` is the default
everywhere; ``"diffusers"`` reproduces diffusers' pipelines, for parity tests."""
DEFAULT_STEPS = 50
"""The step count of a few-step sampler (DDIM, a plug-in) when none is given."""


def check_strength(strength: float) -> None:
    """Raise an InputError unless ``strength`` is a number in (0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, Real) or not 0 < strength <= 1:
        raise InputError(f"strength must be a number in (0, 1], got {strength!r}")


def check_start(start: str) -> None:
    """Raise an InputError unless ``start`` is one of :data:`STARTS`."""
    if start not in STARTS:
        raise InputError(f"unknown start {start!r}; allowed: {', '.join(STARTS)}")


def exact_start(num_timesteps: int, strength: float) -> int:
    """The timestep image-to-image at ``strength`` starts from on the VP path with
    ``start="exact"``: ``int(strength * T) - 1`` (299 at 0.3 with T = 1000)."""
    check_strength(strength)
    if int(strength * num_timesteps) < 1:
        raise InputError(f"strength {strength!r} leaves no denoising step: it starts below "
                         f"timestep 0 of {num_timesteps}; use a strength >= {1 / num_timesteps:g}")
    return int(strength * num_timesteps) - 1


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to
    ``x``'s (as diffusers' ``randn_tensor``), so a seed gives the same noise on CPU and CUDA."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class Timestep:
    """One step of a :meth:`Sampler.denoise` call: its timestep ``t`` (VP: the integer; flow:
    ``sigma * 1000``), which it equals, and the path's scales there and at the next step.

    ``alpha`` and ``sigma`` (``x = alpha x0 + sigma eps``), ``alpha_bar`` (VP: the schedule's;
    flow: the VP alpha_bar of the same SNR) and their ``_next`` versions are float64 Python
    floats; after the call's last step comes (alpha, sigma) = (1, 0). ``time`` is what the
    network sees, ``index`` the step's place in the call, ``next`` the next ``t`` (None after
    the last) and ``after`` the next :class:`Timestep`.
    """

    __slots__ = ("t", "time", "index", "next", "after", "alpha", "sigma", "alpha_bar",
                 "alpha_next", "sigma_next", "alpha_bar_next")

    def __init__(self, t, time, index, scales, after: Timestep | None) -> None:
        self.t, self.time, self.index, self.after = t, time, index, after
        self.next = None if after is None else after.t
        self.alpha, self.sigma, self.alpha_bar = scales
        self.alpha_next, self.sigma_next, self.alpha_bar_next = (
            (1.0, 0.0, 1.0) if after is None else (after.alpha, after.sigma, after.alpha_bar))

    def __reduce__(self) -> tuple:  # copy and pickle rebuild it whole
        return Timestep, (self.t, self.time, self.index,
                          (self.alpha, self.sigma, self.alpha_bar), self.after)

    def __eq__(self, other: object) -> bool:
        return self.t == (other.t if isinstance(other, Timestep) else other)

    def __hash__(self) -> int:
        return hash(self.t)

    def __int__(self) -> int:
        return int(self.t)

    def __float__(self) -> float:
        return float(self.t)

    def __repr__(self) -> str:
        return f"Timestep({self.t!r}, index={self.index})"

    @property
    def last(self) -> bool:
        """Whether this is the call's last step (it lands on alpha = 1, sigma = 0)."""
        return self.after is None

"""DDIM (Song et al. 2021, eq. 12 and 16), as diffusers' ``DDIMScheduler``."""

from __future__ import annotations

import math
from numbers import Real

from torch import Tensor

from diffbench.errors import InputError
from diffbench.sampling.base import DEFAULT_STEPS, Sampler, Timestep
from diffbench.sampling.registry import register_sampler
from diffbench.schedule import NoiseSchedule


@register_sampler("ddim", "DDIM")
class DDIMSampler(Sampler):
    """Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12.

    ``eta=0`` is the deterministic DDIM sampler (no randomness after the initial noise);
    ``eta=1`` over all timesteps is DDPM with the posterior variance. ``eta`` must lie in
    [0, 1]: beyond 1 the direction term's square root goes negative.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = DEFAULT_STEPS,
        eta: float = 0.0,
        spacing: str = "leading",
        clip_sample: bool = True,
    ) -> None:
        if isinstance(eta, bool) or not isinstance(eta, Real) or not 0 <= eta <= 1:
            raise InputError(f"eta must be a number in [0, 1], got {eta!r}")
        super().__init__(schedule, num_steps, spacing, clip_sample)
        self.eta = float(eta)

    def _update(self, a_t: float, a_prev: float) -> tuple[float, float, float]:
        """(x0 coefficient, eps coefficient, sigma) of eq. 12, sigma from eq. 16."""
        sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        return math.sqrt(a_prev), math.sqrt(max(1 - a_prev - sigma**2, 0.0)), sigma

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps (+ sigma z).

        As in diffusers, the direction term uses the model's eps, not one recomputed from the
        clipped x0 (``use_clipped_model_output=False``).
        """
        x0_coef, eps_coef, sigma = self._update(*self.alpha_bars(t))
        return x0_coef * x0 + eps_coef * eps, sigma

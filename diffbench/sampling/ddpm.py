"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), as diffusers' ``DDPMScheduler``."""

from __future__ import annotations

import math

from torch import Tensor

from diffbench.errors import InputError
from diffbench.sampling.base import VARIANCES, Sampler, Timestep
from diffbench.sampling.registry import register_sampler
from diffbench.schedule import NoiseSchedule


@register_sampler("ddpm", "DDPM")
class DDPMSampler(Sampler):
    """Ancestral sampling, Ho et al. 2020, Algorithm 2: x_{t-1} ~ q(x_{t-1} | x_t, x0_hat).

    ``variance="fixed_small"`` uses the posterior variance beta_tilde (eq. 7); ``"fixed_large"``
    uses beta_t (both from sec. 3.2). ``num_steps`` below T skips timesteps ("leading" spacing
    by default), using the betas implied by the alpha_bar of consecutive visited timesteps. The
    final step adds no noise.
    """

    default_steps = None  # every timestep

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        variance: str = "fixed_small",
        spacing: str = "leading",
        clip_sample: bool = True,
    ) -> None:
        if variance not in VARIANCES:
            raise InputError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")
        super().__init__(schedule, num_steps, spacing, clip_sample)
        self.variance = variance

    def _posterior(self, a_t: float, a_prev: float) -> tuple[float, float, float]:
        """(x0 coefficient, x_t coefficient, std) of q(x_{t-1} | x_t, x0), DDPM eq. 6-7."""
        beta_t = 1 - a_t / a_prev
        x0_coef = math.sqrt(a_prev) * beta_t / (1 - a_t)
        xt_coef = math.sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)
        if self.variance == "fixed_small":
            variance = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        else:
            variance = beta_t
        return x0_coef, xt_coef, math.sqrt(variance)

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """The posterior mean from the predicted x0 and x_t, and the posterior std (0 at the
        call's last step)."""
        x0_coef, xt_coef, std = self._posterior(*self.alpha_bars(t))
        return x0_coef * x0 + xt_coef * x_t, 0.0 if t.last else std

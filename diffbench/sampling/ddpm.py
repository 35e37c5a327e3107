"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), as diffusers' ``DDPMScheduler``."""

from __future__ import annotations

from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.sampling.base import VARIANCES, Sampler, Timestep
from diffbench.sampling.registry import register_sampler
from diffbench.sampling.schedule import NoiseSchedule


def posterior(t: Timestep) -> tuple[float, float, float, float]:
    """(x0 coefficient, x_t coefficient, variance, transition variance) of q(x_s | x_t, x0),
    s the step after ``t``, on any path ``x = alpha x0 + sigma eps`` (Kingma et al. 2021,
    "Variational Diffusion Models", eq. 3 and app. A; on the VP path DDPM's eq. 6-7, the
    transition variance being beta_t)."""
    alpha_ts = t.alpha / t.alpha_next
    transition = t.sigma**2 - alpha_ts**2 * t.sigma_next**2  # sigma^2_{t|s}
    x0_coef = t.alpha_next * transition / t.sigma**2
    xt_coef = alpha_ts * t.sigma_next**2 / t.sigma**2
    return x0_coef, xt_coef, transition * t.sigma_next**2 / t.sigma**2, transition


@register_sampler("ddpm", "DDPM")
class DDPMSampler(Sampler):
    """Ancestral sampling, Ho et al. 2020, Algorithm 2: x_{t-1} ~ q(x_{t-1} | x_t, x0_hat).

    ``variance="fixed_small"`` uses the posterior variance beta_tilde (eq. 7); ``"fixed_large"``
    uses beta_t (both from sec. 3.2). ``num_steps`` below T skips timesteps ("leading" spacing
    by default), using the transition between consecutive visited timesteps. The final step
    adds no noise.
    """

    predictions = ("eps", "v", "flow")
    default_steps = None  # every timestep

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        variance: str = "fixed_small",
        spacing: str | None = None,
        clip_sample: bool = True,
        **path: object,
    ) -> None:
        if variance not in VARIANCES:
            raise InputError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")
        super().__init__(schedule, num_steps, spacing, clip_sample, **path)
        self.variance = variance

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """The posterior mean from the predicted x0 and x_t, and the posterior std (0 at the
        call's last step)."""
        x0_coef, xt_coef, small, large = posterior(t)
        variance = max(small, 1e-20) if self.variance == "fixed_small" else large
        return x0_coef * x0 + xt_coef * x_t, 0.0 if t.last else variance**0.5

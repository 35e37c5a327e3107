"""DDIM (Song et al. 2021, eq. 12 and 16), as diffusers' ``DDIMScheduler``."""

from __future__ import annotations

import math
from numbers import Real

from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.sampling.base import DEFAULT_STEPS, Sampler, Timestep
from diffbench.sampling.ddpm import posterior
from diffbench.sampling.registry import register_sampler
from diffbench.sampling.schedule import NoiseSchedule


@register_sampler("ddim", "DDIM")
class DDIMSampler(Sampler):
    """Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12.

    ``eta=0`` is the deterministic DDIM sampler (no randomness after the initial noise);
    ``eta=1`` over all timesteps is DDPM with the posterior variance. ``eta`` must lie in
    [0, 1]: beyond 1 the direction term's square root goes negative.
    """

    predictions = ("eps", "v", "flow")

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = DEFAULT_STEPS,
        eta: float = 0.0,
        spacing: str | None = None,
        clip_sample: bool = True,
        **path: object,
    ) -> None:
        if isinstance(eta, bool) or not isinstance(eta, Real) or not 0 <= eta <= 1:
            raise InputError(f"eta must be a number in [0, 1], got {eta!r}")
        super().__init__(schedule, num_steps, spacing, clip_sample, **path)
        self.eta = float(eta)

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """x_prev = alpha_prev x0_hat + sqrt(sigma_prev^2 - s^2) eps (+ s z), ``s`` eta times
        the posterior std (eq. 16).

        As in diffusers, the direction term uses the model's eps, not one recomputed from the
        clipped x0 (``use_clipped_model_output=False``).
        """
        sigma = self.eta * math.sqrt(posterior(t)[2]) if self.eta else 0.0
        eps_coef = math.sqrt(max(t.sigma_next**2 - sigma**2, 0.0)) if sigma else t.sigma_next
        return t.alpha_next * x0 + eps_coef * eps, sigma

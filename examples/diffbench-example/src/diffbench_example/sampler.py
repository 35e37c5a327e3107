"""DDIM with the direction term recomputed from the clipped x0: diffusers' DDIMScheduler with
``use_clipped_model_output=True`` (Song et al. 2021, eq. 12, with eps = (x_t - alpha x0) / sigma).
"""

from __future__ import annotations

from torch import Tensor

from diffbench.sampling import Sampler, Timestep


class ClippedDDIMSampler(Sampler):
    """Deterministic DDIM whose eps is re-derived from the clipped x0 prediction, so the
    step's two terms agree; it differs from diffbench's DDIM only where x0 was clipped."""

    label = "CDDIM"

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """x_prev = alpha_prev x0 + sigma_prev (x_t - alpha x0) / sigma, with no noise."""
        eps = (x_t - t.alpha * x0) / t.sigma
        return t.alpha_next * x0 + t.sigma_next * eps, 0.0

"""Samplers of the networks trained to jump: ``consistency`` (label ``CM``) and ``meanflow``
(label ``MF``), each one evaluation a step, on the flow path their networks were tuned on
(:mod:`diffbench.sampling.prediction`).

Both default to one step, take all ``num_steps`` steps from any image-to-image start (a jump
costs the same from any strength: CM-2 at strength 0.3 evaluates twice, at 0.3 and 0.15), and use
``trailing`` sigmas (``s_j = s_0 j / n``: two steps from pure noise
are 0.999 and 0.4995, from strength 0.5 are 0.5 and 0.25), so every step is a real jump; the
flow samplers' ``linspace`` would end at ``1 / T`` and waste the second step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.sampling.base import Sampler, Timestep
from diffbench.sampling.denoiser import Denoiser
from diffbench.sampling.prediction import ONE_STEP_PREDICTIONS
from diffbench.sampling.registry import register_sampler
from diffbench.sampling.schedule import NoiseSchedule


class JumpSteps:
    """Every step of the grid from any image-to-image start (see the module docstring)."""

    def start_steps(self, strength: float) -> int:
        return self.num_steps


@register_sampler("consistency", "CM")
class ConsistencySampler(JumpSteps, Sampler):
    """Multistep consistency sampling: Song et al. 2023, "Consistency Models" (arXiv
    2303.01469), Algorithm 1. At each step the network's x0 (``f(x, t)``), then, unless it is
    the last, fresh noise to the next point: ``x = alpha' (x0 + sqrt(s'^2 - s_min^2) z)`` with
    ``s' = sigma' / alpha'`` the variance-exploding sigma of the next point and ``s_min``
    (``sigma_min``, the paper's epsilon) where the consistency function is the identity.
    diffusers: ``CMStochasticIterativeScheduler`` (its ``sigma_min``; on the flow path here, so
    each state is its VE state times ``alpha``). The shipped networks meet the boundary at 0
    exactly (``x0 = x - sigma F``), so ``sigma_min`` is 0 by default. Reads ``consistency``
    networks and MeanFlow's (at ``r = 0``, its jump to the data)."""

    predictions = ONE_STEP_PREDICTIONS
    default_prediction = "consistency"
    default_steps = 1
    flow_spacing = "trailing"

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None,
                 spacing: str | None = None, clip_sample: bool = True, *,
                 prediction: str | None = None, shift: float = 1.0,
                 sigma_min: float = 0.0) -> None:
        if isinstance(sigma_min, bool) or not isinstance(sigma_min, int | float) or not (
                sigma_min >= 0):
            raise InputError(f"sigma_min must be a number >= 0, got {sigma_min!r}")
        self.sigma_min = float(sigma_min)
        super().__init__(schedule, num_steps, spacing, clip_sample, prediction=prediction,
                         shift=shift)

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """(``alpha' x0``, ``alpha' sqrt(s'^2 - s_min^2)``); (x0, 0) at the last step."""
        if t.after is None:
            return x0, 0.0
        alpha, sigma = t.alpha_next, t.sigma_next
        return alpha * x0, alpha * math.sqrt(max((sigma / alpha) ** 2 - self.sigma_min**2, 0.0))


@register_sampler("meanflow", "MF")
class MeanFlowSampler(JumpSteps, Sampler):
    """MeanFlow sampling: Geng et al. 2025, "Mean Flows for One-step Generative Modeling"
    (arXiv 2505.13447), eq. 12: ``z_r = z_t - (t - r) u(z_t, r, t)`` from each point ``t`` to
    the next ``r`` (0 after the last), deterministic; one step from pure noise is their 1-NFE
    generation. Reads MeanFlow networks only (it needs ``u`` at ``r != 0``)."""

    predictions = ("meanflow",)
    default_prediction = "meanflow"
    default_steps = 1
    flow_spacing = "trailing"

    def solve(self, denoise: Denoiser, t: Timestep, x: Tensor, state: dict,
              generator: torch.Generator | None) -> Tensor:
        return x - (t.sigma - t.sigma_next) * denoise.average_velocity(x, t)

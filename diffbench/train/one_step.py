"""The objectives of the networks trained to jump to the data, each tuned from the shipped
rectified-flow network (``init_from``), on its path ``x_s = (1 - s) x0 + s eps``:

* ``consistency``: Easy Consistency Tuning (ECT; Geng et al. 2024, "Consistency Models Made
  Easy", arXiv 2406.14548). The consistency function ``f(x, s) = x - s F(x, 1000 s)`` meets the
  boundary ``f(x, 0) = x`` exactly. A pair ``s > r`` on the same noise; the loss is the
  distance between ``f`` at ``s`` and the stopped-gradient ``f`` at ``r``, ``||.||_2 / (t - r)``
  in the variance-exploding sigmas ``t = s / (1 - s)`` (ECT's L2 metric, its pseudo-Huber with
  ``c = 0``, and weight ``1 / (t - r)``). ``log t ~ N(-1.1, 2.0)`` (ECT's EDM proposal), that is
  ``logit s``; ``r = t (1 - n(t) / q^(stage + 1))`` clamped at 0, ``n(t) = 1 + k sigmoid(-b t)``
  with ECT's ``q = 2, k = 8, b = 1``; ``stage`` rises with the run's progress through
  ``consistency_stages`` stages, so the pair starts as diffusion (``r = 0``: ``f`` is trained
  to x0 itself) and narrows to consistency. ECT rather than consistency training from scratch:
  it starts from a trained network and needs no JVP, hence its small budget.
* ``meanflow``: MeanFlow (Geng et al. 2025, "Mean Flows for One-step Generative Modeling",
  arXiv 2505.13447). The network of the average velocity ``u(z, r, t)``; the target
  ``u_tgt = v - (t - r) (v d_z u + d_t u)`` (eq. 8) with ``v = eps - x0``, the total derivative
  by one forward-mode JVP with tangent ``(v, 0, 1)`` (``torch.func.jvp``); ``t, r`` both
  logit-normal (the paper's ``(-0.4, 1.0)``), ordered, ``r = t`` except for the
  ``meanflow_ratio`` share (the paper's 25%); the adaptive weight ``1 / (||e||^2 + c)^p``,
  ``p = meanflow_power`` (the paper's 1), ``c = 1e-3`` (sec. 4.3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffbench.io.config import TrainConfig
from diffbench.sampling import randn_like
from diffbench.sampling.paths import FLOW_TIMESTEP_SCALE, flow_path

ECT_Q, ECT_K, ECT_B = 2.0, 8.0, 1.0
"""ECT's step-size schedule: the pair's gap halves (q = 2) each stage; n(t) widens small t."""
MEANFLOW_C = 1e-3
"""MeanFlow's adaptive-weight constant (sec. 4.3)."""


def per_example(shape_of: Tensor, values: Tensor) -> Tensor:
    """Per-example values shaped to broadcast over ``shape_of``'s images."""
    return values.reshape(-1, *([1] * (shape_of.dim() - 1)))


def logit_normal(count: int, config: TrainConfig, gen: torch.Generator) -> Tensor:
    """``sigmoid(mean + std u)``, ``u ~ N(0, 1)``: the flow sigmas SD3, ECT (as log t) and
    MeanFlow draw."""
    u = torch.randn((count,), generator=gen, device=gen.device)
    return torch.sigmoid(config.logit_mean + config.logit_std * u)


def consistency_function(model: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
    """``f(x, s) = x - s F(x, 1000 s)``: x0 read as the flow network reads it; ``x`` itself at
    ``s = 0`` (the boundary, whatever the network gives there)."""
    s = per_example(x, sigma)
    return torch.where(s == 0, x, x - s * model(x, sigma * FLOW_TIMESTEP_SCALE))


def ect_pair(sigma: Tensor, stage: int) -> Tensor:
    """ECT's ``r`` for each sigma ``s`` at ``stage`` (flow sigmas in, flow sigmas out)."""
    t = sigma / (1 - sigma)
    decay = (1 + ECT_K * torch.sigmoid(-ECT_B * t)) / ECT_Q ** (stage + 1)
    r = (t * (1 - decay)).clamp(min=0)
    return r / (1 + r)


def consistency_loss(
    model: nn.Module, batch: Tensor, gen: torch.Generator, config: TrainConfig, progress: float
) -> Tensor:
    """ECT's loss on one batch at the run's ``progress`` (0 to 1); see the module docstring."""
    stage = min(int(progress * config.consistency_stages), config.consistency_stages - 1)
    sigma = logit_normal(len(batch), config, gen).to(batch.device)
    sigma = sigma.clamp(max=1 - 1e-6)  # t = s / (1 - s) stays finite
    r = ect_pair(sigma, stage)
    eps = randn_like(batch, gen)
    f_t = consistency_function(model, flow_path(batch, eps, sigma), sigma)
    with torch.no_grad():
        f_r = consistency_function(model, flow_path(batch, eps, r), r)
    # (a zero distance keeps a finite gradient)
    distance = (f_t - f_r).pow(2).flatten(1).sum(1).add(1e-20).sqrt()
    gap = sigma / (1 - sigma) - r / (1 - r)
    return (distance / gap).mean()


def meanflow_loss(
    model: nn.Module, batch: Tensor, gen: torch.Generator, config: TrainConfig
) -> Tensor:
    """MeanFlow's loss on one batch; see the module docstring."""
    count = len(batch)
    first = logit_normal(count, config, gen).to(batch.device)
    second = logit_normal(count, config, gen).to(batch.device)
    t, r = torch.maximum(first, second), torch.minimum(first, second)
    apart = torch.rand((count,), generator=gen, device=gen.device).to(batch.device)
    r = torch.where(apart < config.meanflow_ratio, r, t)
    eps = randn_like(batch, gen)
    z, v = flow_path(batch, eps, t), eps - batch

    def average_velocity(z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return model(z, t * FLOW_TIMESTEP_SCALE, r * FLOW_TIMESTEP_SCALE)

    u, total = torch.func.jvp(average_velocity, (z, r, t),
                              (v, torch.zeros_like(r), torch.ones_like(t)))
    target = (v - per_example(batch, t - r) * total).detach()
    error = (u - target).pow(2).flatten(1).sum(1)
    weight = 1 / (error.detach() + MEANFLOW_C) ** config.meanflow_power
    return (weight * error).mean()

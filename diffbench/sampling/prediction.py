"""What a diffusion network predicts, and the one place every prediction becomes (x0, eps).

Three parametrisations, recorded in a checkpoint's metadata as ``prediction``:

* ``eps``: the noise, on the VP path ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` (Ho et al. 2020);
* ``v``: ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` on the same path (Salimans & Ho 2022,
  "Progressive Distillation", arXiv 2202.00512, sec. 4);
* ``flow``: the velocity ``v = eps - x0`` of the rectified-flow path
  ``x_s = (1 - s) x0 + s eps`` (Liu et al. 2022, arXiv 2209.03003; Esser et al. 2024,
  arXiv 2403.03206, sec. 2), the network conditioned on ``t = s * 1000`` as in diffusers.

Samplers read (x0, eps) from :func:`vp_x0_eps` or :func:`flow_x0_eps`, whatever the network
predicts; a sampler given a network of another path is refused by :func:`check_prediction`.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffbench.errors import InputError

PREDICTIONS = ("eps", "v", "flow")
VP_PREDICTIONS = ("eps", "v")
"""The predictions of networks trained on the VP path (DDPM, DDIM and the VP solvers)."""
FLOW_PREDICTIONS = ("flow",)
"""The predictions of networks trained on the rectified-flow path (the flow samplers)."""
FLOW_TIMESTEP_SCALE = 1000.0
"""A flow network sees ``t = sigma * 1000`` (diffusers' ``num_train_timesteps``)."""


def check_prediction(prediction: str, allowed: tuple[str, ...], sampler: str) -> None:
    """Raise an InputError naming the network's ``prediction`` and the ``sampler`` unless the
    sampler reads it."""
    if prediction not in PREDICTIONS:
        raise InputError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")
    if prediction not in allowed:
        raise InputError(
            f"sampler {sampler!r} reads networks predicting {' or '.join(allowed)}, but this "
            f"network predicts {prediction!r}; use a "
            f"{'flow' if prediction in FLOW_PREDICTIONS else 'VP'} sampler"
        )


def vp_x0_eps(
    prediction: str, output: Tensor, x_t: Tensor, alpha_bar: float
) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a VP network's ``output`` at ``x_t``, alpha_bar a float."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    if prediction == "eps":
        return (x_t - s * output) / a, output
    if prediction == "v":  # Salimans & Ho 2022, eq. 9-10 inverted
        return a * x_t - s * output, s * x_t + a * output
    raise InputError(f"prediction {prediction!r} is not a VP prediction; allowed: "
                     f"{', '.join(VP_PREDICTIONS)}")


def flow_x0_eps(output: Tensor, x_s: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a flow network's velocity ``output = eps - x0`` at ``x_s``:
    ``x0 = x_s - s v`` and ``eps = x_s + (1 - s) v``."""
    return x_s - sigma * output, x_s + (1 - sigma) * output


def flow_path(x0: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """``(1 - s) x0 + s eps``: the rectified-flow path at ``sigma`` (diffusers'
    ``FlowMatchEulerDiscreteScheduler.scale_noise``); a tensor ``sigma`` broadcasts per example."""
    if isinstance(sigma, Tensor):
        sigma = sigma.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - sigma) * x0 + sigma * eps


def flow_snr(sigma: float) -> float:
    """Signal-to-noise ratio ``((1 - s) / s)^2`` of the flow path at ``sigma``."""
    return ((1 - sigma) / sigma) ** 2


def vp_snr(alpha_bar: float) -> float:
    """Signal-to-noise ratio ``ab / (1 - ab)`` of the VP path."""
    return alpha_bar / (1 - alpha_bar)

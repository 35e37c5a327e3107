"""What a diffusion network predicts, and the one place every prediction becomes (x0, eps).

Five parametrisations, recorded in a checkpoint's metadata as ``prediction``, each on the path
its network was trained on (:mod:`diffbench.sampling.paths`), ``x = alpha x0 + sigma eps``:

* ``eps``: the noise, on the VP path (Ho et al. 2020);
* ``v``: ``v = alpha eps - sigma x0`` on the VP path, where ``alpha^2 + sigma^2 = 1``
  (Salimans & Ho 2022, "Progressive Distillation", arXiv 2202.00512, sec. 4);
* ``flow``: the velocity ``v = eps - x0`` of the rectified-flow path, ``alpha = 1 - sigma``
  (Liu et al. 2022, arXiv 2209.03003; Esser et al. 2024, arXiv 2403.03206, sec. 2), the
  network conditioned on ``t = sigma * 1000`` as in diffusers;
* ``consistency``: a consistency function on the flow path, read as ``x0 = x - sigma F``, so
  ``x0 = x`` at ``sigma = 0`` whatever the network (the boundary condition of Song et al. 2023,
  arXiv 2303.01469, eq. 5); trained by consistency tuning (:mod:`diffbench.train.one_step`);
* ``meanflow``: the average velocity ``u(z, r, t)`` of MeanFlow (Geng et al. 2025,
  arXiv 2505.13447), read at ``r = 0`` (the network's default), so ``x0 = z - t u(z, 0, t)``
  is its one-step jump to the data.

Every sampler reads (x0, eps) from :func:`x0_eps` through the denoiser
(:mod:`diffbench.sampling.denoiser`), whatever the network predicts.
"""

from __future__ import annotations

from torch import Tensor

from diffbench.core.errors import InputError

PREDICTIONS = ("eps", "v", "flow", "consistency", "meanflow")
VP_PREDICTIONS = ("eps", "v")
"""The predictions of networks trained on the VP path."""
FLOW_PREDICTIONS = ("flow", "consistency", "meanflow")
"""The predictions of networks trained on the rectified-flow path."""
ONE_STEP_PREDICTIONS = ("consistency", "meanflow")
"""The networks trained to jump to the data in one evaluation (read like ``flow``)."""


def check_prediction(prediction: str, allowed: tuple[str, ...], sampler: str) -> None:
    """Raise an InputError naming the network's ``prediction`` and the ``sampler`` unless the
    sampler reads it."""
    if prediction not in PREDICTIONS:
        raise InputError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")
    if prediction not in allowed:
        raise InputError(f"sampler {sampler!r} reads networks predicting {' or '.join(allowed)}, "
                         f"but this network predicts {prediction!r}")


def x0_eps(
    prediction: str, output: Tensor, x: Tensor, alpha: float, sigma: float
) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a network's ``output`` at ``x = alpha x0 + sigma eps`` (float scales)."""
    if prediction == "eps":  # Ho et al. 2020, eq. 15
        return (x - sigma * output) / alpha, output
    if prediction == "v":  # Salimans & Ho 2022, eq. 9-10 inverted (alpha^2 + sigma^2 = 1)
        return alpha * x - sigma * output, sigma * x + alpha * output
    if prediction in FLOW_PREDICTIONS:  # v = eps - x0 with alpha = 1 - sigma
        return x - sigma * output, x + alpha * output
    raise InputError(f"unknown prediction {prediction!r}; allowed: {', '.join(PREDICTIONS)}")

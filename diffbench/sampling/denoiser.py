"""The denoiser: a network, whatever it predicts, read as (x0, eps) at one step of a path.

As k-diffusion's ``external.py`` wraps each network once so that every sampler is one function
over sigmas, a :class:`Denoiser` calls ``model(x, t)`` with ``t`` the network time of the step
(an int64 VP timestep or a float ``sigma * 1000``), converts its output through
:func:`~diffbench.sampling.prediction.x0_eps`, and clips x0 to [-1, 1] when the sampler's
``clip_sample`` policy says so (diffusers' ``clip_sample``; eps stays the network's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.sampling.prediction import x0_eps

Model = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``model(x_t, t) -> prediction`` with ``t`` a tensor of shape [B]."""


def check_output(prediction: str, output: Tensor, x: Tensor) -> None:
    """Raise an InputError unless the network's ``output`` is shaped like its input ``x``."""
    if output.shape != x.shape:
        raise InputError(f"the network's {prediction} shape {tuple(output.shape)} must equal "
                         f"{tuple(x.shape)}")


class Denoiser:
    """``denoiser(x, t) -> (x0, eps)`` for ``model`` predicting ``prediction``; ``t`` a
    :class:`~diffbench.sampling.base.Timestep`. ``first`` keeps the x0 of the evaluation made
    after :meth:`watch` (a loop's callback reads it)."""

    def __init__(
        self, model: Model, prediction: str, clip: bool, time_dtype: torch.dtype
    ) -> None:
        self.model, self.prediction, self.clip, self.time_dtype = (
            model, prediction, clip, time_dtype)
        self.first: Tensor | None = None
        self._watching = False

    def _times(self, x: Tensor, value: float) -> Tensor:
        """The network time ``value`` for each of ``x``'s examples."""
        return torch.full((x.shape[0],), value, device=x.device, dtype=self.time_dtype)

    def __call__(self, x: Tensor, t) -> tuple[Tensor, Tensor]:
        output = self.model(x, self._times(x, t.time))
        check_output(self.prediction, output, x)
        x0, eps = x0_eps(self.prediction, output, x, t.alpha, t.sigma)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        if self._watching:
            self.first, self._watching = x0, False
        return x0, eps

    def average_velocity(self, x: Tensor, t) -> Tensor:
        """MeanFlow's ``u(x, r, t)`` (Geng et al. 2025, arXiv 2505.13447, eq. 3) from the step
        ``t`` to the next, ``r`` (0 after the last): ``model(x, t, r)`` at network times. The
        x0 it keeps for a callback is the straight-line end ``x - sigma_t u`` (exact when
        ``r = 0``)."""
        end = 0.0 if t.after is None else t.after.time
        output = self.model(x, self._times(x, t.time), self._times(x, end))
        check_output(self.prediction, output, x)
        if self._watching:
            self.first, self._watching = x - t.sigma * output, False
        return output

    def watch(self) -> None:
        """Keep the next evaluation's x0 in :attr:`first`."""
        self._watching = True

"""The step hooks of a sampler written against the VP path alone, from the network's eps:
:meth:`EpsHooks.advance` and :meth:`EpsHooks.advance_with`, which :class:`~diffbench.sampling.
base.Sampler` runs through its :meth:`~diffbench.sampling.base.Sampler.solve` when a plug-in
provides them instead of ``update`` or ``solve``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffbench.sampling.denoiser import Denoiser
from diffbench.sampling.steps import Timestep


class EpsHooks:
    """The VP plug-in hooks; ``update``, ``_noised`` and ``clip_sample`` are the sampler's."""

    def predict_x0(self, eps: Tensor, x_t: Tensor, alpha_bar: float) -> Tensor:
        """x0 from eps on the VP path (DDPM eq. 15), clipped when ``clip_sample``: for plug-ins'
        :meth:`advance`."""
        x0 = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        return x0.clamp(-1, 1) if self.clip_sample else x0

    def advance(self, eps: Tensor, t: Timestep, x_t: Tensor, state: dict,
                generator: torch.Generator | None) -> Tensor:
        """A plug-in's VP step from the network's ``eps`` at ``t`` (default: :meth:`update`)."""
        x0 = self.predict_x0(eps, x_t, t.alpha_bar)
        return self._noised(*self.update(t, x0, eps, x_t), x_t, None, generator)

    def advance_with(self, predict: Callable[[Tensor, int], Tensor], t: Timestep, x_t: Tensor,
                     state: dict, generator: torch.Generator | None) -> Tensor:
        """A plug-in's VP step given ``predict(x, t) -> eps`` (default: :meth:`advance` on one
        evaluation at ``t``)."""
        return self.advance(predict(x_t, t), t, x_t, state, generator)

    def solve_with_eps(self, denoise: Denoiser, t: Timestep, x: Tensor, state: dict,
                       generator: torch.Generator | None) -> Tensor:
        """The sampler's ``solve`` when a plug-in provides :meth:`advance` or
        :meth:`advance_with`: the denoiser read as eps."""

        def predict(x_: Tensor, t_: int | Timestep) -> Tensor:
            return denoise(x_, t if t_ == t else t.after)[1]  # this step's or the next's

        return self.advance_with(predict, t, x, state, generator)

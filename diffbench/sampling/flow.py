"""Samplers for rectified-flow networks: Euler, Heun and DPM-Solver++(2M) on sigma.

A flow network predicts the velocity ``v = eps - x0`` of the path ``x_s = (1 - s) x0 + s eps``
(:mod:`diffbench.sampling.prediction`) and is called at ``t = s * 1000``, a float. These
samplers keep the state ``x_s`` and read the network's output as (x0, eps) through
:func:`~diffbench.sampling.prediction.flow_x0_eps`, so the step formulas are written on the
path, as for the VP samplers.

Sigmas follow diffusers 0.42's ``FlowMatchEulerDiscreteScheduler`` (``shift`` = 1 by default;
SD3 uses 3): ``shift(linspace(1, shift(1 / T), n))`` with ``shift(s) = k s / (1 + (k - 1) s)``,
then 0 (DPM-Solver++ uses diffusers' DPM grid instead, see its class).
``tests/test_parity_flow.py`` checks whole trajectories and img2img loops against diffusers'
Euler, Heun and DPM-Solver++ flow schedulers.

Image-to-image (Esser et al. 2024's SD3 img2img; diffusers' ``StableDiffusion3Img2ImgPipeline``):

* ``start="diffusers"``: the last ``n - int(n - n * strength)`` of the n sigmas, noised with
  ``scale_noise`` at the first, so the start depends on n (0.3 at n = 10 starts at sigma 0.3007);
* ``start="exact"``: exactly ``sigma = strength``, then ``max(1, int(n * strength))`` steps
  over ``shift(linspace(u, shift(1 / T), m))``, ``u`` the unshifted strength, then 0: the grid
  diffusers would use had its schedule begun at the strength.

No x0 clipping: diffusers' flow schedulers have none. Arithmetic runs in the data's dtype with
float64 coefficients.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from diffbench.errors import InputError
from diffbench.plan import Plan
from diffbench.sampling.base import Callback, Model, Sampler, check_start, check_strength
from diffbench.sampling.prediction import (
    FLOW_PREDICTIONS,
    FLOW_TIMESTEP_SCALE,
    flow_path,
    flow_snr,
    flow_x0_eps,
)
from diffbench.sampling.registry import register_sampler
from diffbench.schedule import NoiseSchedule


def shift_sigma(sigma: float, shift: float) -> float:
    """SD3's timestep shift ``k s / (1 + (k - 1) s)`` (Esser et al. 2024, eq. 23)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: float, shift: float) -> float:
    """The inverse of :func:`shift_sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


def _linspace(start: float, stop: float, num: int) -> list[float]:
    """``linspace`` as float64 Python floats (numpy's, which diffusers uses, to rounding)."""
    return torch.linspace(start, stop, num, dtype=torch.float64).tolist()


class FlowSampler(Sampler):
    """The skeleton of a flow sampler: its sigmas, img2img's start via ``scale_noise``, and the
    loop; a subclass provides :meth:`denoise`'s steps through :meth:`flow_step` or its own
    :meth:`denoise`. ``schedule`` gives only T (``num_timesteps``): flow has no alpha_bar."""

    predictions = FLOW_PREDICTIONS
    default_steps = 50
    default_spacing = "linspace"  # the only spacing of flow sigmas

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        spacing: str | None = None,
        clip_sample: bool = False,
        shift: float = 1.0,
    ) -> None:
        if num_steps is None:
            num_steps = self.default_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        if spacing not in (None, "linspace"):
            raise InputError(f"flow samplers space sigmas by linspace only, got {spacing!r}")
        if isinstance(shift, bool) or not isinstance(shift, Real) or not shift > 0:
            raise InputError(f"shift must be a number > 0, got {shift!r}")
        self.schedule, self.num_steps, self.spacing = schedule, num_steps, "linspace"
        self.clip_sample = False  # diffusers' flow schedulers do not clip; nor do these
        self.shift = float(shift)
        self.sigmas = self.shifted_grid(self.grid_top, num_steps)
        self.timesteps = torch.tensor(self.sigmas, dtype=torch.float64) * FLOW_TIMESTEP_SCALE
        self._plans: dict[tuple[float, str], Plan] = {}

    @property
    def grid_top(self) -> float:
        """The unshifted sigma the full grid begins at (1 for Euler and Heun)."""
        return 1.0

    def grid(self, top: float, count: int) -> list[float]:
        """``count`` unshifted sigmas from ``top`` down: diffusers' flow-matching grid,
        ``linspace(top, shift(1 / T), count)``, its ``sigma_max`` to its ``sigma_min``, which
        diffusers has already shifted once (so the bottom is shifted twice, as there)."""
        return _linspace(top, min(shift_sigma(1 / self.schedule.num_timesteps, self.shift), top),
                         count)

    def shifted_grid(self, top: float, count: int) -> list[float]:
        return [shift_sigma(s, self.shift) for s in self.grid(top, count)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps}, shift={self.shift:g})"

    def img2img_sigmas(self, strength: float, start: str = "exact") -> list[float]:
        """The sigmas image-to-image at ``strength`` runs, the first its start (see the
        module's docstring for ``start``; read them from :meth:`plan`, as ``timesteps / 1000``)."""
        check_start(start)
        check_strength(strength)
        n = self.num_steps
        if start == "diffusers":  # StableDiffusion3Img2ImgPipeline.get_timesteps
            count = n - int(max(n - min(n * strength, n), 0))
            if count < 1:
                raise InputError(f"strength {strength!r} leaves no denoising step out of {n}; "
                                 f"use a strength >= {1 / n:g} or more steps")
            return self.sigmas[n - count :]
        steps = max(1, int(n * strength))
        sigmas = self.shifted_grid(unshift_sigma(float(strength), self.shift), steps)
        sigmas[0] = float(strength)  # exactly, whatever the shift's rounding
        if len(set(sigmas)) < len(sigmas):
            raise InputError(f"strength {strength!r} is too small for {steps} distinct flow steps")
        return sigmas

    def make_plan(self, strength: float, start: str) -> Plan:
        """The plan on the flow path: network timesteps ``sigma * 1000``, the start sigma and
        its SNR ``((1 - s) / s)^2``, and the VP timestep of that SNR as its start timestep."""
        sigmas = self.img2img_sigmas(strength, start)
        snr = flow_snr(sigmas[0])
        timesteps = torch.tensor(sigmas, dtype=torch.float64) * FLOW_TIMESTEP_SCALE
        return Plan(strength, start, timesteps, self.nfe_of(len(sigmas)),
                    self.schedule.timestep_for_snr(snr), snr, sigmas[0])

    def img2img_timesteps(self, strength: float, start: str = "exact") -> Tensor:
        """The network's timesteps ``sigma * 1000`` of :meth:`img2img_sigmas` (floats)."""
        return self.plan(strength, start).timesteps

    def add_noise(self, x0: Tensor, noise: Tensor, t: float | Tensor) -> Tensor:
        """diffusers' ``scale_noise`` at ``t = sigma * 1000``: ``(1 - s) x0 + s noise``; the
        base class's ``img2img`` calls it at its first timestep."""
        return flow_path(x0, noise, float(t) / FLOW_TIMESTEP_SCALE)

    def denoise(
        self,
        model: Model,
        x: Tensor,
        timesteps: Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """From ``x`` at ``timesteps[0]`` (``sigma * 1000``, strictly decreasing) to sigma 0."""
        return self.denoise_sigmas(model, x, (torch.as_tensor(timesteps, dtype=torch.float64)
                                              / FLOW_TIMESTEP_SCALE).tolist(), callback)

    def denoise_sigmas(
        self, model: Model, x: Tensor, sigmas: list[float], callback: Callback | None = None
    ) -> Tensor:
        """The loop over ``sigmas`` (then 0): :meth:`flow_step` per sigma; ``callback`` as
        :meth:`Sampler.denoise`'s, with ``t = sigma * 1000``."""
        if not sigmas or any(b >= a for a, b in zip(sigmas, sigmas[1:])) or not (
            0 < sigmas[-1] <= sigmas[0] <= 1
        ):
            raise InputError(f"sigmas must be strictly decreasing in (0, 1], got {sigmas[:4]}")
        state: dict = {}
        first: list[Tensor] = []  # the step's first velocity, for the callback

        def watched(x_s: Tensor, t: Tensor) -> Tensor:
            velocity = model(x_s, t)
            if not first:
                first.append(velocity)
            return velocity

        nexts = [*sigmas[1:], 0.0]
        for index, (sigma, sigma_next) in enumerate(zip(sigmas, nexts)):
            first.clear()
            x_next = self.flow_step(watched if callback else model, x, sigma, sigma_next, index,
                                    state)
            if callback is not None:
                callback({"i": index, "t": sigma * FLOW_TIMESTEP_SCALE, "x": x,
                          "x0": flow_x0_eps(first[0], x, sigma)[0]})
            x = x_next
        return x

    def flow_step(
        self, model: Model, x: Tensor, sigma: float, sigma_next: float, index: int, state: dict
    ) -> Tensor:
        raise NotImplementedError

    def network_timestep(self, sigma: float) -> float:
        """The ``t`` the network sees at ``sigma``: ``sigma * 1000``."""
        return sigma * FLOW_TIMESTEP_SCALE

    def predict(self, model: Model, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """(x0, eps) from ``model(x, t)``, ``t`` = :meth:`network_timestep` (float32 [B])."""
        t = torch.full((x.shape[0],), self.network_timestep(sigma), device=x.device,
                       dtype=torch.float32)
        velocity = model(x, t)
        if velocity.shape != x.shape:
            raise InputError(f"the network's output shape {tuple(velocity.shape)} must equal "
                             f"{tuple(x.shape)}")
        return flow_x0_eps(velocity, x, sigma)


@register_sampler("flow-euler", "RF-Euler")
class FlowEulerSampler(FlowSampler):
    """Euler's method on the rectified-flow ODE ``dx/ds = v`` (Liu et al. 2022, arXiv
    2209.03003; Esser et al. 2024, arXiv 2403.03206): ``x_next = x + (s_next - s) v``, written
    on the path as ``x_next = (1 - s_next) x0 + s_next eps`` (the same number). diffusers:
    ``FlowMatchEulerDiscreteScheduler(shift=k)``."""

    def flow_step(
        self, model: Model, x: Tensor, sigma: float, sigma_next: float, index: int, state: dict
    ) -> Tensor:
        x0, eps = self.predict(model, x, sigma)
        return x + (sigma_next - sigma) * (eps - x0)


@register_sampler("flow-heun", "RF-Heun")
class FlowHeunSampler(FlowSampler):
    """Heun's second-order method on the rectified-flow ODE (Karras et al. 2022, arXiv
    2206.00364, Algorithm 1, on sigma with ``x_s`` itself as the state): an Euler step to
    ``s_next``, the network again there, and the step redone with the mean of the two
    velocities; the last step, to 0, stays Euler's. So ``2k - 1`` evaluations for k sigmas.
    diffusers: ``FlowMatchHeunDiscreteScheduler(shift=k)``."""

    def nfe_of(self, steps: int) -> int:
        return 2 * steps - 1

    def flow_step(
        self, model: Model, x: Tensor, sigma: float, sigma_next: float, index: int, state: dict
    ) -> Tensor:
        x0, eps = self.predict(model, x, sigma)
        velocity, dt = eps - x0, sigma_next - sigma
        if sigma_next == 0.0:
            return x + dt * velocity
        x0_next, eps_next = self.predict(model, x + dt * velocity, sigma_next)
        return x + dt * (velocity + (eps_next - x0_next)) / 2


def _flow_lambda(sigma: float) -> float:
    """``log(alpha / sigma)`` on the flow path, alpha = 1 - s: half its log SNR."""
    return math.log((1 - sigma) / sigma)


@register_sampler("flow-dpmsolver++", "RF-DPM++2M")
class FlowDPMSolverPlusPlusSampler(FlowSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2) on the flow path, whose
    alpha is ``1 - s`` and sigma ``s``: ``x_next = s_next / s * x - (1 - s_next) expm1(-h) D``,
    ``h = lambda_next - lambda``, ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev``; first order on the
    first step and at the last, which lands on x0.

    diffusers: ``DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=k,
    prediction_type="flow_prediction", algorithm_type="dpmsolver++", solver_order=2,
    solver_type="midpoint", lower_order_final=True)``, whose grid is
    ``shift(linspace(0, 1 - 1/T, n + 1))`` reversed, less its 0, and whose network sees the
    integer ``int(1000 s)`` (its timesteps are int64), as here.
    """

    @property
    def grid_top(self) -> float:
        return 1 - 1 / self.schedule.num_timesteps

    def grid(self, top: float, count: int) -> list[float]:
        """``top * j / count`` for ``j = count .. 1`` (diffusers' ``1 - linspace(1, 1/T, n+1)``
        reversed, less its 0, at ``top = 1 - 1/T``)."""
        return [top * j / count for j in range(count, 0, -1)]

    def network_timestep(self, sigma: float) -> float:
        return float(int(sigma * FLOW_TIMESTEP_SCALE))

    def flow_step(
        self, model: Model, x: Tensor, sigma: float, sigma_next: float, index: int, state: dict
    ) -> Tensor:
        x0, _ = self.predict(model, x, sigma)
        if sigma_next == 0.0:
            return x0
        h = _flow_lambda(sigma_next) - _flow_lambda(sigma)
        d = x0
        if "x0" in state:
            r = state["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state["x0"]
        state.update(x0=x0, h=h)
        return (sigma_next / sigma) * x - (1 - sigma_next) * math.expm1(-h) * d

"""Noise paths: where a sampler's points lie and what signal and noise scale each one has.

A path is ``x = alpha x0 + sigma eps``; the solvers (:mod:`diffbench.sampling.solvers`) are
written on (alpha, sigma) alone, so each runs on every path:

* :class:`VPPath`, the variance-preserving schedule of DDPM (Ho et al. 2020): points are the
  integer timesteps ``t`` in [0, T), ``alpha = sqrt(ab_t)``, ``sigma = sqrt(1 - ab_t)``;
* :class:`FlowPath`, rectified flow (Liu et al. 2022, arXiv 2209.03003; Esser et al. 2024,
  arXiv 2403.03206): points are sigmas ``s`` in (0, 1], ``alpha = 1 - s``, ``sigma = s``, the
  network called at ``t = s * 1000`` as in diffusers.

After a call's last point comes (alpha, sigma) = (1, 0) on both: diffusers' DDIM
``set_alpha_to_one=True`` and its solvers' ``final_sigmas_type="zero"``.

Each path also names the coordinates its ODE solvers (Euler, Heun) step in, as diffusers does:
Karras et al.'s ``x / alpha`` over ``sigma / alpha`` on the VP path (``EulerDiscreteScheduler``'s
"sigma space"), ``x`` over ``s`` on the flow path (``FlowMatchEulerDiscreteScheduler``). In both
the ODE is ``dy/dtau = (y - x0) / tau``.

Flow sigmas follow diffusers 0.42: spacing ``linspace`` is ``FlowMatchEulerDiscreteScheduler``'s
grid, ``shift(linspace(1, shift(1 / T), n))`` with SD3's shift ``k s / (1 + (k - 1) s)``;
``trailing`` is ``DPMSolverMultistepScheduler(use_flow_sigmas=True)``'s, ``shift((1 - 1/T) j /
n)`` for ``j = n .. 1``; there the network sees the integer ``int(1000 s)`` (``integer_time``).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.sampling.prediction import FLOW_PREDICTIONS
from diffbench.sampling.schedule import (
    NoiseSchedule,
    img2img_num_steps,
    make_start_timesteps,
    make_timesteps,
)

FLOW_TIMESTEP_SCALE = 1000.0
"""A flow network sees ``t = sigma * 1000`` (diffusers' ``num_train_timesteps``)."""
FLOW_SPACINGS = ("linspace", "trailing")


def shift_sigma(sigma: float, shift: float) -> float:
    """SD3's timestep shift ``k s / (1 + (k - 1) s)`` (Esser et al. 2024, eq. 23)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: float, shift: float) -> float:
    """The inverse of :func:`shift_sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


class VPPath:
    """The VP schedule's path: integer timesteps, ``alpha_bar`` from the schedule's table."""

    kind = "vp"
    clips = True  # diffusers' VP schedulers clip x0 (``clip_sample``)
    time_dtype = torch.long

    def __init__(self, schedule: NoiseSchedule, shift: float = 1.0) -> None:
        if shift != 1.0:
            raise InputError(f"shift applies to the flow path only, got shift={shift!r} with a "
                             f"VP network (prediction eps or v)")
        self.schedule = schedule
        self.shift = 1.0
        self.num_timesteps = schedule.num_timesteps
        self._alpha_bars = schedule.alphas_cumprod.tolist()  # float64 Python floats

    def __repr__(self) -> str:
        return f"VPPath({self.schedule!r})"

    def grid(self, num_steps: int, spacing: str) -> list[int]:
        """The ``num_steps`` timesteps of a whole call (see ``make_timesteps``)."""
        return make_timesteps(self.num_timesteps, num_steps, spacing).tolist()

    def exact_start(self, strength: float, num_steps: int, spacing: str) -> list[int]:
        """``num_steps`` timesteps from exactly ``int(strength * T) - 1`` toward 0."""
        if int(strength * self.num_timesteps) < 1:
            raise InputError(f"strength {strength!r} leaves no denoising step: it starts below "
                             f"timestep 0 of {self.num_timesteps}; use a strength >= "
                             f"{1 / self.num_timesteps:g}")
        start = int(strength * self.num_timesteps) - 1
        return make_start_timesteps(start, num_steps, spacing).tolist()

    def diffusers_start(self, grid: list[int], strength: float) -> list[int]:
        """The last ``min(int(n * strength), n)`` of the grid: diffusers' img2img pipelines."""
        return grid[len(grid) - img2img_num_steps(len(grid), strength):]

    def check(self, points: list) -> None:
        count = self.num_timesteps
        if (not points or any(later >= t for t, later in zip(points, points[1:]))
                or not 0 <= points[-1] <= points[0] < count):
            shown = points if len(points) <= 6 else [*points[:3], "...", *points[-2:]]
            raise InputError(f"timesteps must be a non-empty, strictly decreasing sequence of "
                             f"integers in [0, {count}), got {shown}")

    def points_of(self, timesteps: Tensor | list) -> list[int]:
        """Network timesteps -> points (the same integers)."""
        values = timesteps.tolist() if isinstance(timesteps, Tensor) else list(timesteps)
        return [int(t) for t in values]

    def timesteps_of(self, points: list[int]) -> Tensor:
        return torch.tensor(points, dtype=torch.long)

    def network_time(self, point: int) -> int:
        return point

    def alpha_bar(self, point: int) -> float:
        return self._alpha_bars[point]

    def scales(self, point: int) -> tuple[float, float]:
        """(alpha, sigma) = (sqrt(ab), sqrt(1 - ab)), float64."""
        ab = self._alpha_bars[point]
        return math.sqrt(ab), math.sqrt(1 - ab)

    @staticmethod
    def ode(alpha: float, sigma: float) -> tuple[float, float]:
        """(scale, time) of Karras et al.'s ODE: ``y = x / alpha`` over ``tau = sigma / alpha``."""
        return alpha, sigma / alpha

    def add_noise(self, x0: Tensor, noise: Tensor, point: int) -> Tensor:
        """The schedule's ``add_noise`` (DDPM eq. 4)."""
        return self.schedule.add_noise(x0, noise, int(point))

    def start_facts(self, point: int) -> tuple[int, float, float | None]:
        """(start timestep, its SNR ``ab / (1 - ab)``, no sigma) of a call starting at ``point``."""
        return point, self.schedule.snr(point), None


class FlowPath:
    """The rectified-flow path: sigmas in (0, 1], shifted by SD3's ``shift``."""

    kind = "flow"
    clips = False  # diffusers' flow schedulers do not clip x0; nor does this path
    time_dtype = torch.float32

    def __init__(
        self, schedule: NoiseSchedule, shift: float = 1.0, integer_time: bool = False
    ) -> None:
        if isinstance(shift, bool) or not isinstance(shift, Real) or not shift > 0:
            raise InputError(f"shift must be a number > 0, got {shift!r}")
        self.schedule = schedule  # its T and its SNR table (the equal-SNR currency)
        self.num_timesteps = schedule.num_timesteps
        self.shift = float(shift)
        self.integer_time = integer_time  # int(1000 s), as diffusers' DPM-Solver on flow

    def __repr__(self) -> str:
        return f"FlowPath(shift={self.shift:g})"

    def _unshifted(self, top: float, count: int, spacing: str) -> list[float]:
        if spacing == "trailing":  # DPMSolverMultistepScheduler(use_flow_sigmas=True)
            return [top * j / count for j in range(count, 0, -1)]
        bottom = min(shift_sigma(1 / self.num_timesteps, self.shift), top)  # shifted once there
        return torch.linspace(top, bottom, count, dtype=torch.float64).tolist()

    def _top(self, spacing: str) -> float:
        return 1 - 1 / self.num_timesteps if spacing == "trailing" else 1.0

    def _check_spacing(self, spacing: str) -> None:
        if spacing not in FLOW_SPACINGS:
            raise InputError(f"flow sigmas are spaced by {' or '.join(FLOW_SPACINGS)}, "
                             f"got {spacing!r}")

    def grid(self, num_steps: int, spacing: str) -> list[float]:
        """The ``num_steps`` sigmas of a whole call, shifted (see the module docstring)."""
        self._check_spacing(spacing)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        top = self._top(spacing)
        return [shift_sigma(s, self.shift) for s in self._unshifted(top, num_steps, spacing)]

    def exact_start(self, strength: float, num_steps: int, spacing: str) -> list[float]:
        """``num_steps`` sigmas from exactly ``strength``: the grid diffusers would use had its
        schedule begun at the strength (``linspace`` from the unshifted strength)."""
        self._check_spacing(spacing)
        unshifted = unshift_sigma(float(strength), self.shift)
        sigmas = [shift_sigma(s, self.shift)
                  for s in self._unshifted(unshifted, num_steps, spacing)]
        sigmas[0] = float(strength)  # exactly, whatever the shift's rounding
        if len(set(sigmas)) < len(sigmas):
            raise InputError(f"strength {strength!r} is too small for {num_steps} distinct "
                             f"flow steps")
        return sigmas

    def diffusers_start(self, grid: list[float], strength: float) -> list[float]:
        """``StableDiffusion3Img2ImgPipeline.get_timesteps``: the last ``n - int(n - n s)``."""
        n = len(grid)
        count = n - int(max(n - min(n * strength, n), 0))
        if count < 1:
            raise InputError(f"strength {strength!r} leaves no denoising step out of {n}; "
                             f"use a strength >= {1 / n:g} or more steps")
        return grid[n - count:]

    def check(self, points: list) -> None:
        if not points or any(b >= a for a, b in zip(points, points[1:])) or not (
            0 < points[-1] <= points[0] <= 1
        ):
            raise InputError(f"sigmas must be strictly decreasing in (0, 1], got {points[:4]}")

    def points_of(self, timesteps: Tensor | list) -> list[float]:
        """Network timesteps ``sigma * 1000`` -> sigmas."""
        return (torch.as_tensor(timesteps, dtype=torch.float64) / FLOW_TIMESTEP_SCALE).tolist()

    def timesteps_of(self, points: list[float]) -> Tensor:
        return torch.tensor(points, dtype=torch.float64) * FLOW_TIMESTEP_SCALE

    def network_time(self, point: float) -> float:
        if self.integer_time:
            return float(int(point * FLOW_TIMESTEP_SCALE))
        return point * FLOW_TIMESTEP_SCALE

    def alpha_bar(self, point: float) -> float:
        """The VP alpha_bar of the same SNR: ``(1 - s)^2 / ((1 - s)^2 + s^2)``."""
        return (1 - point) ** 2 / ((1 - point) ** 2 + point**2)

    def scales(self, point: float) -> tuple[float, float]:
        return 1 - point, point

    @staticmethod
    def ode(alpha: float, sigma: float) -> tuple[float, float]:
        """(scale, time) of the flow ODE ``dx/ds = v``: ``x`` itself over ``s``."""
        return 1.0, sigma

    def add_noise(self, x0: Tensor, noise: Tensor, point: float) -> Tensor:
        """diffusers' ``scale_noise``: ``(1 - s) x0 + s noise``."""
        return flow_path(x0, noise, float(point))

    def start_facts(self, point: float) -> tuple[int, float, float | None]:
        """(VP timestep of the same SNR, the SNR ``((1 - s) / s)^2``, the sigma)."""
        snr = ((1 - point) / point) ** 2
        return self.schedule.timestep_for_snr(snr), snr, point


def flow_path(x0: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """``(1 - s) x0 + s eps``: the rectified-flow path at ``sigma`` (diffusers'
    ``FlowMatchEulerDiscreteScheduler.scale_noise``); a tensor ``sigma`` broadcasts per example."""
    if isinstance(sigma, Tensor):
        sigma = sigma.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - sigma) * x0 + sigma * eps


def make_path(
    prediction: str, schedule: NoiseSchedule, shift: float = 1.0, spacing: str | None = None
) -> VPPath | FlowPath:
    """The path a network predicting ``prediction`` was trained on: flow for ``flow``, else the
    VP ``schedule``'s; ``trailing`` sigmas give a flow network ``int(1000 s)`` (diffusers'
    DPM-Solver on flow), a one-step network its exact ``1000 s``."""
    if prediction in FLOW_PREDICTIONS:  # diffusers' DPM-Solver convention, for flow networks
        integer_time = spacing == "trailing" and prediction == "flow"
        return FlowPath(schedule, shift, integer_time=integer_time)
    return VPPath(schedule, shift)

"""The sampler skeleton: :class:`Sampler` (a path's grid, img2img's plan and start, the one
loop and its callback, the step hooks); numerics and diffusers: :mod:`diffbench.sampling`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.core.errors import InputError
from diffbench.core.plan import Plan
from diffbench.sampling.denoiser import Denoiser, Model, check_output
from diffbench.sampling.eps_hooks import EpsHooks
from diffbench.sampling.paths import make_path
from diffbench.sampling.prediction import (
    FLOW_PREDICTIONS,
    VP_PREDICTIONS,
    check_prediction,
    x0_eps,
)
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.sampling.steps import (
    DEFAULT_STEPS,
    STARTS,
    VARIANCES,
    Timestep,
    check_start,
    check_strength,
    exact_start,
    randn_like,
)

__all__ = ["DEFAULT_STEPS", "STARTS", "VARIANCES", "Callback", "Model", "Sampler", "Timestep",
           "check_start", "check_strength", "exact_start", "randn_like"]

Callback = Callable[[dict], None]
"""``callback({"i": index, "t": timestep, "x": state, "x0": predicted x0})`` after each step."""


class Sampler(EpsHooks):
    """The skeleton every sampler shares: the path of its network (VP or flow, from
    ``prediction``), the grid, img2img's start, and :meth:`denoise`, the one loop, which calls
    :meth:`solve` once a step with a denoiser reading the network as (x0, eps). A sampler
    provides :meth:`update` (one evaluation: a step's mean and noise scale) or overrides
    :meth:`solve` (history in the call's ``state``, or several evaluations); a VP plug-in may
    provide :meth:`advance` or :meth:`advance_with` instead. Immutable: prediction, path, steps
    and spacing are fixed at construction."""

    name: str | None = None  # set by register_sampler
    predictions: tuple[str, ...] = VP_PREDICTIONS  # what networks it reads; built-ins: all
    default_prediction: str = "eps"
    label: str = "Sampler"  # names its systems ("DDIM-50"); default: the class name less Sampler
    default_steps: int | None = DEFAULT_STEPS  # None: every timestep of the schedule
    default_spacing: str = "leading"  # on the VP path
    flow_spacing: str = "linspace"  # on the flow path

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.label = cls.__dict__.get("label") or cls.__name__.removesuffix("Sampler")
        hooks = ("advance", "advance_with")
        if "solve" not in cls.__dict__ and any(hook in cls.__dict__ for hook in hooks):
            cls.solve = EpsHooks.solve_with_eps  # a plug-in's VP hooks

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        spacing: str | None = None,
        clip_sample: bool = True,
        *,
        prediction: str | None = None,
        shift: float = 1.0,
    ) -> None:
        prediction = prediction or self.default_prediction
        check_prediction(prediction, self.predictions, self.name or type(self).__name__)
        if spacing is None:
            spacing = self.spacing_for(prediction)
        self.path = make_path(prediction, schedule, shift, spacing)
        self.schedule, self.prediction, self.spacing = schedule, prediction, spacing
        if num_steps is None:
            num_steps = self.default_steps or schedule.num_timesteps
        self.num_steps = num_steps
        self.shift = self.path.shift
        self.clip_sample = bool(clip_sample) and self.path.clips
        self._grid = self.path.grid(self.num_steps, spacing)
        self.timesteps = self.path.timesteps_of(self._grid)
        self._linked: dict[tuple, list[Timestep]] = {}  # steps_for()'s, made once each
        self._steps = self.steps_for(self.timesteps)
        self._index = {step.t: step.index for step in self._steps}
        self._plans: dict[tuple[float, str], Plan] = {}  # plan()'s, made once each

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_steps={self.num_steps}, spacing={self.spacing!r}, "
                f"prediction={self.prediction!r}, path={self.path!r})")

    @classmethod
    def spacing_for(cls, prediction: str) -> str:
        """The default spacing on the path of a network predicting ``prediction``."""
        return cls.flow_spacing if prediction in FLOW_PREDICTIONS else cls.default_spacing

    @property
    def sigmas(self) -> list[float]:
        """The grid's sigmas on the flow path (``timesteps / 1000``, exactly as made)."""
        if self.path.kind != "flow":
            raise AttributeError("sigmas: this sampler runs on the VP path; see timesteps")
        return list(self._grid)

    # -- steps and plans --------------------------------------------------------------------

    def steps_for(self, timesteps: Tensor | list) -> list[Timestep]:
        """``timesteps`` (strictly decreasing) as linked :class:`Timestep` objects, made once
        per sequence and kept (a sampler is immutable), so a call does not rebuild them."""
        points = self.path.points_of(timesteps)
        key = tuple(points)
        if key not in self._linked:
            self.path.check(points)
            self._linked[key] = self._link(points)
        return self._linked[key]

    def _link(self, points: list) -> list[Timestep]:
        path, steps, after = self.path, [], None
        timesteps = path.timesteps_of(points).tolist()  # the path's own point -> timestep
        for index in range(len(points) - 1, -1, -1):
            point = points[index]
            after = Timestep(timesteps[index], path.network_time(point), index,
                             (*path.scales(point), path.alpha_bar(point)), after)
            steps.append(after)
        return steps[::-1]

    def step_index(self, t: int | Tensor) -> int:
        """Where ``t`` stands in :attr:`timesteps` (an InputError if it is not one of them)."""
        index = self._index.get(t.t if isinstance(t, Timestep) else _plain(t))
        if index is None:
            first, last = self.timesteps[0].item(), self.timesteps[-1].item()
            raise InputError(f"timestep {_plain(t)} is not one of this sampler's "
                             f"{self.num_steps} timesteps ({self.spacing} spacing: {first} .. "
                             f"{last})")
        return index

    def _as_step(self, t: int | Tensor | Timestep) -> Timestep:
        return t if isinstance(t, Timestep) else self._steps[self.step_index(t)]

    def alpha_bars(self, t: int | Tensor | Timestep) -> tuple[float, float]:
        """(alpha_bar at ``t``, at the next step; 1 after the last), float64 Python floats."""
        t = self._as_step(t)
        return t.alpha_bar, t.alpha_bar_next

    def plan(self, strength: float, start: str = "exact") -> Plan:
        """The :class:`~diffbench.core.plan.Plan` of one image-to-image call at ``strength``,
        computed once per (strength, start) and kept (a sampler is immutable).

        ``start="exact"``: :meth:`start_steps` steps from exactly the strength (VP: timestep
        ``int(strength * T) - 1``; flow: sigma = strength) with this sampler's spacing.
        ``start="diffusers"``: the tail of the whole grid diffusers' img2img pipelines
        take, so the start depends on n (DDIM-10 at 0.3 starts at t = 200, DDIM-50 at 280).
        """
        check_strength(strength)
        check_start(start)
        key = (float(strength), start)
        if key not in self._plans:
            points = self._start_points(float(strength), start)
            self._plans[key] = Plan(float(strength), start, self.path.timesteps_of(points),
                                    self.nfe_of(len(points)), *self.path.start_facts(points[0]))
        return self._plans[key]

    def _start_points(self, strength: float, start: str) -> list:
        if start == "diffusers":
            return self.path.diffusers_start(self._grid, strength)
        return self.path.exact_start(strength, self.start_steps(strength), self.spacing)

    def start_steps(self, strength: float) -> int:
        """Steps from an exact start: ``max(1, int(n * strength))`` (diffusers' share)."""
        return max(1, int(self.num_steps * strength))

    def img2img_timesteps(self, strength: float, start: str = "exact") -> Tensor:
        return self.plan(strength, start).timesteps  # the first is the start

    def img2img_sigmas(self, strength: float, start: str = "exact") -> list[float]:
        """The flow sigmas image-to-image at ``strength`` runs (flow path only)."""
        check_strength(strength)
        check_start(start)
        if self.path.kind != "flow":
            raise InputError("img2img_sigmas: this sampler runs on the VP path")
        return self._start_points(float(strength), start)

    def nfe_of(self, steps: int) -> int:
        """Network evaluations of a :meth:`denoise` over ``steps`` steps: one each here; a
        sampler that calls the model more often says so."""
        return steps

    def nfe(self, strength: float = 1.0, start: str = "exact") -> int:
        """Network evaluations of one :meth:`img2img` call (its :meth:`plan`'s)."""
        return self.plan(strength, start).nfe

    # -- the calls --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, model: Model, x_T: Tensor, generator: torch.Generator | None = None,
               progress: bool = False, callback: Callback | None = None) -> Tensor:
        """Run the whole grid from ``x_T`` (pure noise at its first step) down to x0."""
        return self.denoise(model, x_T, self.timesteps, generator, progress, callback)

    @torch.no_grad()
    def img2img(
        self,
        model: Model,
        x0: Tensor,
        strength: float,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        start: str = "exact",
        callback: Callback | None = None,
    ) -> Tensor:
        """SDEdit (Meng et al. 2022): noise ``x0`` to the start of its :meth:`plan` and
        denoise it back."""
        timesteps = self.plan(strength, start).timesteps
        if noise is None:
            noise = randn_like(x0, generator)
        x_t = self.add_noise(x0, noise, timesteps[0])
        return self.denoise(model, x_t, timesteps, generator, progress, callback)

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | float | Tensor) -> Tensor:
        """``x0`` noised to timestep ``t`` of this path, where a :meth:`denoise` from ``t``
        starts (VP: the schedule's ``add_noise``; flow: diffusers' ``scale_noise``)."""
        if noise.shape != x0.shape:
            raise InputError(f"noise shape {tuple(noise.shape)} must equal {tuple(x0.shape)}")
        return self.path.add_noise(x0, noise, self.path.points_of([_plain(t)])[0])

    def denoise(
        self,
        model: Model,
        x: Tensor,
        timesteps: Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """The loop: from ``x`` at ``timesteps[0]`` (any strictly decreasing sequence of this
        path's timesteps), :meth:`solve` each step. ``callback``, as k-diffusion's: after each
        step, ``{"i", "t", "x", "x0"}``: the step's index and timestep, the state it started
        from and the x0 its first evaluation predicted."""
        steps = self.steps_for(timesteps)
        denoiser = Denoiser(model, self.prediction, self.clip_sample, self.path.time_dtype)
        state: dict = {}
        for t in tqdm(steps, desc=f"{self.label} ({len(steps)} steps)", disable=not progress,
                      leave=False):
            if callback is not None:
                denoiser.watch()
            x_next = self.solve(denoiser, t, x, state, generator)
            if callback is not None:
                callback({"i": t.index, "t": t.t, "x": x, "x0": denoiser.first})
            x = x_next
        return x

    # -- the step hooks ---------------------------------------------------------------------

    def solve(self, denoise: Denoiser, t: Timestep, x: Tensor, state: dict,
              generator: torch.Generator | None) -> Tensor:
        """One step of the loop from ``x`` at ``t``: here one evaluation and :meth:`update`'s
        mean plus ``std * noise``. ``state`` starts empty at each call of :meth:`denoise`."""
        x0, eps = denoise(x, t)
        return self._noised(*self.update(t, x0, eps, x), x, None, generator)

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """(mean of the next state, std of its noise) of the step from ``t``, from the
        predicted (clipped) ``x0`` and the network's ``eps``."""
        raise NotImplementedError(f"{type(self).__name__} provides no update()")

    def step(self, output: Tensor, t: int | Tensor, x_t: Tensor, noise: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """One step of a one-evaluation sampler from the network's ``output`` at timestep
        ``t`` of :attr:`timesteps` (or a :class:`Timestep`), as diffusers' ``step``."""
        check_output(self.prediction, output, x_t)
        t = self._as_step(t)
        x0, eps = x0_eps(self.prediction, output, x_t, t.alpha, t.sigma)
        if self.clip_sample:
            x0 = x0.clamp(-1, 1)
        return self._noised(*self.update(t, x0, eps, x_t), x_t, noise, generator)

    @staticmethod
    def _noised(mean: Tensor, std: float, x: Tensor, noise: Tensor | None,
                generator: torch.Generator | None) -> Tensor:
        if std == 0.0:
            return mean
        if noise is None:
            noise = randn_like(x, generator)
        elif noise.shape != x.shape:
            raise InputError(f"noise shape {tuple(noise.shape)} must equal {tuple(x.shape)}")
        return mean + std * noise


def _plain(t: int | float | Tensor | Timestep) -> int | float:
    """A timestep as a Python number."""
    if isinstance(t, Timestep):
        return t.t
    value = t.item() if isinstance(t, Tensor) else t
    return int(value) if float(value).is_integer() else float(value)

"""Any diffusers scheduler class as a diffbench sampler: ``sampler: "diffusers:DDIMScheduler"``.

:func:`diffusers_sampler` wraps a ``SchedulerMixin`` subclass in one :class:`Sampler` subclass
(made once per class) whose :meth:`~DiffusersSampler.denoise` is the loop of diffusers'
pipelines: ``scale_model_input``, the network, ``step(..., generator=)``. The scheduler is built
from the sampler's :class:`~diffbench.sampling.schedule.NoiseSchedule` (``trained_betas``,
``num_train_timesteps``), the network's prediction (``eps`` -> ``"epsilon"``, ``v`` ->
``"v_prediction"``), ``clip_sample`` (the space's clip policy; a scheduler with no such option,
e.g. DPM-Solver's, gets the network's output recomputed from its clipped x0, as diffbench's
denoiser clips for its own solvers) and ``timestep_spacing`` (the system's
``spacing``; null: the scheduler's default). Everything else is the class's default config.

Which timesteps an image-to-image call at ``strength`` runs (:meth:`DiffusersSampler.plan`):

* ``start="exact"`` (diffbench's default): the target is diffbench's own exact plan, the
  ``max(1, int(n * strength))`` timesteps from ``int(strength * T) - 1`` down with the
  sampler's spacing (:meth:`Sampler.plan`). A scheduler whose ``set_timesteps`` takes
  ``timesteps=`` (DDPM, DPM-Solver, Euler, Heun, LCM, ...) runs exactly them. One that keeps
  no step index and steps by the stride ``T // n`` (``DDIMScheduler``) runs them too where they
  are that stride apart, as :mod:`diffbench.systems.peer` does. Any other scheduler runs its
  own ``set_timesteps(n)`` entries at or below the exact start, as diffusers' img2img pipelines
  keep a tail of the grid; the call then starts at the first of them.
* ``start="diffusers"``: the pipelines' tail ``timesteps[(n - min(int(n * strength), n)) *
  order:]``.

The input is noised to the plan's first timestep on the VP path and handed to the scheduler
rescaled by ``1 / scale_model_input(1, t)``, so the network sees the VP ``x_t`` (the identity
for VP schedulers; ``sqrt(s^2 + 1)`` for sigma-space ones, Euler's and Heun's). The network is
called at ``round(t)`` as an int64. NFE counts network calls: one per scheduler entry (Heun's
repeat each timestep but the first).

diffusers stays optional: nothing here imports it at import time; its schedulers are named
in configs as ``diffusers:<Class>`` (``pip install 'diffbench[parity]'``).
"""

from __future__ import annotations

import copy
import inspect
from importlib.util import find_spec
from typing import Any

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.plan import Plan
from diffbench.sampling.base import Callback, Model, Sampler, check_start, check_strength
from diffbench.sampling.denoiser import check_output
from diffbench.sampling.prediction import x0_eps

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction"}
"""A diffbench network's prediction -> the scheduler's ``prediction_type``."""
INSTALL = "pip install 'diffbench[parity]'"
_CLASSES: dict[type, type[Sampler]] = {}


def check_diffusers(spec: str) -> None:
    """An InputError naming the extra to install when ``spec`` names a diffusers object and
    diffusers is not installed."""
    if spec.partition(":")[0].split(".")[0] == "diffusers" and find_spec("diffusers") is None:
        raise InputError(f"sampler {spec!r} needs diffusers, which is not installed: {INSTALL}")


def is_scheduler(obj: object) -> bool:
    """Whether ``obj`` is a diffusers scheduler class (``set_timesteps``, ``step`` and
    ``from_config``), without importing diffusers; a class whose backend is missing counts."""
    if type(obj).__name__ == "DummyObject":  # diffusers' stand-in for a class it cannot load
        return True
    return isinstance(obj, type) and not issubclass(obj, Sampler) and all(
        callable(getattr(obj, name, None)) for name in ("set_timesteps", "step", "from_config"))


def diffusers_sampler(scheduler: type, spec: str) -> type[Sampler]:
    """The :class:`DiffusersSampler` subclass running ``scheduler`` (named ``spec`` in a
    config), made once per class; an InputError when diffusers cannot build it."""
    if type(scheduler).__name__ == "DummyObject":
        needs = [b for b in getattr(scheduler, "_backends", []) if b != "torch"]
        raise InputError(f"sampler {spec!r} needs {', '.join(needs) or 'a missing package'}, "
                         f"which is not installed: pip install {' '.join(needs)}")
    if scheduler not in _CLASSES:
        try:
            config = scheduler.from_config({}).config  # its defaults, checked by diffusers
        except Exception as error:  # a class diffusers cannot build as a scheduler
            raise InputError(f"sampler {spec!r}: diffusers cannot build {scheduler.__name__} "
                             f"({type(error).__name__}: {error})") from None
        if "trained_betas" not in config:
            raise InputError(f"sampler {spec!r}: {scheduler.__name__} takes no trained_betas, so "
                             f"it cannot follow a diffbench noise schedule; use a scheduler of "
                             f"the VP path (DDIMScheduler, DPMSolverMultistepScheduler, ...)")
        _CLASSES[scheduler] = type(f"Diffusers{scheduler.__name__}", (DiffusersSampler,), {
            "__module__": __name__, "scheduler_class": scheduler, "label": scheduler.__name__,
            "default_spacing": config.get("timestep_spacing") or "leading"})
        _CLASSES[scheduler].name = spec
    return _CLASSES[scheduler]


def _strided(timesteps: list, stride: int, seam: int) -> bool:
    """Whether consecutive ``timesteps`` lie ``stride`` apart but across ``seam`` (two runs
    joined there): ``DDIMScheduler.step``'s previous timestep is ``t - T // n``."""
    pairs = zip(timesteps, timesteps[1:])
    return all(a - b == stride for i, (a, b) in enumerate(pairs, 1) if i != seam)


class DiffusersSampler(Sampler):
    """A diffusers scheduler driven as diffusers' pipelines drive it (module docstring). Its
    label is the scheduler's class name (systems ``DDIMScheduler-50``, ``LDM-...``); its name
    the config's ``diffusers:<Class>``."""

    scheduler_class: Any = None
    predictions = ("eps", "v")

    def __init__(self, schedule, num_steps: int | None = None, spacing: str | None = None,
                 clip_sample: bool = True, **path: Any) -> None:
        super().__init__(schedule, num_steps, spacing, clip_sample, **path)
        cls = self.scheduler_class
        options = {"num_train_timesteps": schedule.num_timesteps,
                   "trained_betas": schedule.betas.tolist(),
                   "prediction_type": PREDICTION_TYPES[self.prediction],
                   "clip_sample": self.clip_sample, "timestep_spacing": self.spacing}
        known = {k: v for k, v in cls.from_config({}).config.items() if not k.startswith("_")}
        self.config = {**known, **{k: v for k, v in options.items() if k in known}}
        self._clips = self.clip_sample and "clip_sample" not in known
        self._prepared: dict[tuple, tuple[Any, list]] = {}
        full = self._scheduler()
        entries = full.timesteps.tolist()
        self.timesteps = self._store(full, entries, 0)
        self._full_entries = entries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps}, spacing={self.spacing!r})"

    def _scheduler(self, timesteps: list[int] | None = None) -> Any:
        scheduler = self.scheduler_class.from_config(self.config)
        if timesteps is None:
            scheduler.set_timesteps(self.num_steps)
        else:
            scheduler.set_timesteps(timesteps=timesteps)
        return scheduler

    def _store(self, scheduler: Any, entries: list, begin: int) -> Tensor:
        """Keep ``scheduler`` ready to run ``entries`` (its own from index ``begin``); the plan
        timesteps they visit."""
        if begin and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        timesteps = torch.tensor([round(float(t)) for t in entries]).unique_consecutive()
        self._prepared[tuple(timesteps.tolist())] = (scheduler, entries)
        return timesteps

    def plan(self, strength: float, start: str = "exact") -> Plan:
        """The timesteps and NFE one img2img call at ``strength`` runs (module docstring)."""
        check_strength(strength)
        check_start(start)
        key = (float(strength), start)
        if key not in self._plans:
            timesteps, nfe = self._choose(float(strength), start)
            self._plans[key] = Plan(float(strength), start, timesteps, nfe,
                                    *self.path.start_facts(int(timesteps[0])))
        return self._plans[key]

    def _choose(self, strength: float, start: str) -> tuple[Tensor, int]:
        """(timesteps, network calls) of a call at ``strength``: see the module docstring."""
        full, n = self._full_entries, self.num_steps
        if start == "diffusers":
            begin = (n - min(int(n * strength), n)) * getattr(self.scheduler_class, "order", 1)
            return self._store(self._scheduler(), full[begin:], begin), len(full[begin:])
        target = self.path.exact_start(strength, self.start_steps(strength), self.spacing)
        if "timesteps" in inspect.signature(self.scheduler_class.set_timesteps).parameters:
            scheduler = self._scheduler(target)
            entries = scheduler.timesteps.tolist()
            return self._store(scheduler, entries, 0), len(entries)
        scheduler, stride = self._scheduler(), self.schedule.num_timesteps // n
        if not hasattr(scheduler, "step_index") and _strided(full + target, stride, len(full)):
            return self._store(scheduler, target, 0), len(target)  # its step reads t alone
        begin = next((i for i, t in enumerate(full) if t <= target[0]), None)
        if begin is None:
            raise InputError(f"{self.label}-{n} has no timestep at or below the exact start "
                             f"{target[0]} of strength {strength!r}; use more steps")
        return self._store(scheduler, full[begin:], begin), len(full[begin:])

    def _clipped(self, output: Tensor, x: Tensor, t: int) -> Tensor:
        """The network's ``output`` at the VP ``x`` at ``t`` with its x0 clipped to [-1, 1]:
        the clip policy of diffbench's denoiser, for a scheduler with no ``clip_sample``."""
        alpha, sigma = self.path.scales(t)
        x0 = x0_eps(self.prediction, output, x, alpha, sigma)[0].clamp(-1, 1)
        eps = (x - alpha * x0) / sigma
        return eps if self.prediction == "eps" else alpha * eps - sigma * x0

    def denoise(self, model: Model, x: Tensor, timesteps: Tensor,
                generator: torch.Generator | None = None, progress: bool = False,
                callback: Callback | None = None) -> Tensor:
        """diffusers' pipeline loop over the scheduler entries prepared for ``timesteps`` (a
        plan's, or :attr:`timesteps`), from the VP state ``x`` at the first of them."""
        prepared = self._prepared.get(tuple(torch.as_tensor(timesteps).tolist()))
        if prepared is None:
            raise InputError(f"{self.label} runs the timesteps of its plans only, not "
                             f"{torch.as_tensor(timesteps).tolist()}")
        scheduler, entries = copy.deepcopy(prepared[0]), prepared[1]
        takes = inspect.signature(scheduler.step).parameters
        options = {"generator": generator} if "generator" in takes else {}
        x = x / scheduler.scale_model_input(torch.ones((), dtype=x.dtype), entries[0])
        for i, t in enumerate(entries):
            x_in = scheduler.scale_model_input(x, t)
            time = torch.full((x.shape[0],), round(float(t)), dtype=torch.long, device=x.device)
            output = model(x_in, time)
            check_output(self.prediction, output, x_in)
            if self._clips:
                output = self._clipped(output, x_in, round(float(t)))
            x_next = scheduler.step(output, t, x, **options).prev_sample
            if callback is not None:
                alpha, sigma = self.path.scales(round(float(t)))
                x0 = x0_eps(self.prediction, output, x_in, alpha, sigma)[0]
                callback({"i": i, "t": round(float(t)), "x": x, "x0": x0})
            x = x_next
        return x

"""The sampler skeleton: :class:`Sampler` (timesteps, img2img's plan and start, the loop, x0
and its clipping, the step), the :class:`Timestep` a step receives, the exact img2img start and
seeded noise. Numerics and departures from diffusers: see :mod:`diffbench.sampling`."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.errors import InputError
from diffbench.plan import Plan
from diffbench.sampling.prediction import VP_PREDICTIONS, vp_x0_eps
from diffbench.schedule import (
    NoiseSchedule,
    img2img_num_steps,
    make_start_timesteps,
    make_timesteps,
)

Model = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``model(x_t, t) -> eps`` with ``t`` a LongTensor of shape [B]."""
Callback = Callable[[dict], None]
"""``callback({"i": index, "t": timestep, "x": state, "x0": predicted x0})`` after each step."""

VARIANCES = ("fixed_small", "fixed_large")
STARTS = ("exact", "diffusers")
"""Where image-to-image starts: see :meth:`Sampler.img2img_timesteps`. ``"exact"`` is the
default everywhere; ``"diffusers"`` reproduces diffusers' pipelines, for parity tests."""
DEFAULT_STEPS = 50
"""The step count of a few-step sampler (DDIM, a plug-in) when none is given."""


def check_strength(strength: float) -> None:
    """Raise an InputError unless ``strength`` is a number in (0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, Real) or not 0 < strength <= 1:
        raise InputError(f"strength must be a number in (0, 1], got {strength!r}")


def check_start(start: str) -> None:
    """Raise an InputError unless ``start`` is one of :data:`STARTS`."""
    if start not in STARTS:
        raise InputError(f"unknown start {start!r}; allowed: {', '.join(STARTS)}")


def exact_start(num_timesteps: int, strength: float) -> int:
    """The timestep image-to-image at ``strength`` starts from with ``start="exact"``:
    ``int(strength * T) - 1`` (299 at 0.3 with T = 1000) whatever the sampler and step count."""
    check_strength(strength)
    if int(strength * num_timesteps) < 1:
        raise InputError(f"strength {strength!r} leaves no denoising step: it starts below "
                         f"timestep 0 of {num_timesteps}; use a strength >= {1 / num_timesteps:g}")
    return int(strength * num_timesteps) - 1


def _check_same_shape(name: str, value: Tensor, x: Tensor) -> None:
    if value.shape != x.shape:
        raise InputError(f"{name} shape {tuple(value.shape)} must equal {tuple(x.shape)}")


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to
    ``x``'s (as diffusers' ``randn_tensor``), so a seed gives the same noise on CPU and CUDA."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class Timestep(int):
    """A timestep of one :meth:`Sampler.denoise` call: the integer ``t`` that also knows the
    call's next timestep, so a step needs no fixed sequence to look its coefficients up in.

    ``alpha_bar`` and ``alpha_bar_next`` are float64 Python floats; after the call's last
    timestep (``next`` is None) comes alpha_bar = 1 (diffusers' DDIM ``set_alpha_to_one=True``
    and its solvers' ``final_sigmas_type="zero"``). ``index`` is its place in the call.
    """

    def __new__(
        cls, t: int, index: int, next: int | None, alpha_bar: float, alpha_bar_next: float
    ) -> Timestep:
        self = super().__new__(cls, t)
        self.index, self.next = index, next
        self.alpha_bar, self.alpha_bar_next = alpha_bar, alpha_bar_next
        return self

    def __reduce__(self) -> tuple:  # copy and pickle rebuild it whole
        return Timestep, (int(self), self.index, self.next, self.alpha_bar, self.alpha_bar_next)

    @property
    def last(self) -> bool:
        """Whether this is the call's last timestep (the step lands on alpha_bar = 1)."""
        return self.next is None


class Sampler:
    """The skeleton every sampler shares: the timestep sequence, img2img's start via
    ``add_noise``, the loop over timesteps calling the model, the x0 prediction and its clipping
    policy, and the step ``mean + std * noise``.

    A one-step sampler provides :meth:`update` (the mean and noise scale of one step, from
    coefficients computed in float64 as Python floats from the step's :class:`Timestep`, so a
    step works on any device and dtype without host syncs). A multistep sampler overrides
    :meth:`advance`, keeping its history in the ``state`` dict local to one :meth:`denoise`
    call; one that calls the model more than once a step (Heun) overrides :meth:`advance_with`
    and :meth:`nfe_of`. All of them run the one loop, :meth:`denoise`.
    """

    name: str | None = None  # set by register_sampler
    predictions: tuple[str, ...] = VP_PREDICTIONS  # what networks it reads (see .prediction)
    prediction: str = "eps"  # what this sampler's network predicts; set from its checkpoint
    label: str = "Sampler"  # names its systems ("DDIM-50"); default: the class name less Sampler
    default_steps: int | None = DEFAULT_STEPS  # None: every timestep of the schedule
    default_spacing: str = "leading"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.label = cls.__dict__.get("label") or cls.__name__.removesuffix("Sampler")

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        spacing: str | None = None,
        clip_sample: bool = True,
    ) -> None:
        if num_steps is None:
            num_steps = self.default_steps or schedule.num_timesteps
        if spacing is None:
            spacing = self.default_spacing
        self.schedule = schedule
        self.num_steps = num_steps
        self.spacing = spacing
        self.clip_sample = clip_sample
        self.timesteps = make_timesteps(schedule.num_timesteps, num_steps, spacing)
        self._alphas_cumprod = schedule.alphas_cumprod.tolist()  # float64 Python floats
        self._steps = self.steps_for(self.timesteps)
        self._index = {int(t): t.index for t in self._steps}
        self._plans: dict[tuple[float, str], Plan] = {}  # plan()'s, made once each

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_steps={self.num_steps}, spacing={self.spacing!r}, "
            f"schedule={self.schedule!r})"
        )

    def steps_for(self, timesteps: Tensor | list[int]) -> list[Timestep]:
        """``timesteps`` (strictly decreasing, in [0, T)) as :class:`Timestep` objects: each
        with its alpha_bar and the next one's (1 after the last), float64 Python floats."""
        values = timesteps.tolist() if isinstance(timesteps, Tensor) else list(timesteps)
        count = self.schedule.num_timesteps
        if (
            not values
            or any(later >= t for t, later in zip(values, values[1:]))
            or not 0 <= values[-1] <= values[0] < count
        ):
            shown = values if len(values) <= 6 else [*values[:3], "...", *values[-2:]]
            raise InputError(f"timesteps must be a non-empty, strictly decreasing sequence of "
                             f"integers in [0, {count}), got {shown}")
        ab = self._alphas_cumprod
        nexts = [*values[1:], None]
        return [
            Timestep(t, i, n, ab[t], 1.0 if n is None else ab[n])
            for i, (t, n) in enumerate(zip(values, nexts))
        ]

    def alpha_bars(self, t: int | Tensor) -> tuple[float, float]:
        """(alpha_bar at ``t``, alpha_bar at the next timestep, 1 after the last), as float64
        Python floats: the call's next for a :class:`Timestep`, else the next of
        :attr:`timesteps`."""
        if not isinstance(t, Timestep):
            t = self._steps[self.step_index(t)]
        return t.alpha_bar, t.alpha_bar_next

    def step_index(self, t: int | Tensor) -> int:
        """Where ``t`` stands in :attr:`timesteps` (a ValueError if it is not one of them)."""
        index = self._index.get(int(t))
        if index is None:
            first, last = self.timesteps[0].item(), self.timesteps[-1].item()
            raise InputError(
                f"timestep {int(t)} is not one of this sampler's {self.num_steps} timesteps "
                f"({self.spacing} spacing: {first} .. {last})"
            )
        return index

    def predict_x0(self, eps: Tensor, x_t: Tensor, alpha_bar: float) -> Tensor:
        """x0 from the eps prediction (DDPM eq. 15), clipped to [-1, 1] when ``clip_sample``."""
        x0 = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        return x0.clamp(-1, 1) if self.clip_sample else x0

    def update(self, t: Timestep, x0: Tensor, eps: Tensor, x_t: Tensor) -> tuple[Tensor, float]:
        """(mean of x_prev, std of its noise) of the step from ``t``, from the predicted ``x0``;
        ``self.alpha_bars(t)`` gives its coefficients' alpha_bars."""
        raise NotImplementedError(f"{type(self).__name__} provides no update()")

    def step(
        self,
        eps: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One reverse step from timestep ``t`` to the next timestep (of :attr:`timesteps`, or
        of the call for a :class:`Timestep`): :meth:`update`'s mean, plus ``std * noise`` when
        ``std`` is not 0."""
        _check_same_shape("eps", eps, x_t)
        if not isinstance(t, Timestep):
            t = self._steps[self.step_index(t)]
        x0 = self.predict_x0(eps, x_t, t.alpha_bar)
        x_prev, std = self.update(t, x0, eps, x_t)
        if std == 0.0:
            return x_prev
        if noise is None:
            noise = randn_like(x_t, generator)
        _check_same_shape("noise", noise, x_t)
        return x_prev + std * noise

    def advance(
        self, eps: Tensor, t: Timestep, x_t: Tensor, state: dict, generator: torch.Generator | None
    ) -> Tensor:
        """One step of :meth:`denoise`'s loop from the network's ``eps`` at ``t``. ``state``
        starts empty at each call of :meth:`denoise` and is never kept: a multistep sampler
        stores its history there."""
        return self.step(eps, t, x_t, generator=generator)

    def advance_with(
        self,
        predict: Callable[[Tensor, int], Tensor],
        t: Timestep,
        x_t: Tensor,
        state: dict,
        generator: torch.Generator | None,
    ) -> Tensor:
        """One step of :meth:`denoise`'s loop given ``predict(x, t) -> eps`` (the network, read
        as eps): :meth:`advance` on one evaluation at ``t``. A solver that evaluates the network
        more than once a step (Heun) overrides this, and says so in :meth:`nfe_of`."""
        return self.advance(predict(x_t, t), t, x_t, state, generator)

    def plan(self, strength: float, start: str = "exact") -> Plan:
        """The :class:`~diffbench.plan.Plan` of one image-to-image call at ``strength``: its
        timesteps (:meth:`img2img_timesteps`), NFE (:meth:`nfe_of`) and start, computed once per
        (strength, start) and kept (a sampler is immutable)."""
        check_strength(strength)
        check_start(start)
        key = (float(strength), start)
        if key not in self._plans:
            self._plans[key] = self.make_plan(float(strength), start)
        return self._plans[key]

    def make_plan(self, strength: float, start: str) -> Plan:
        """:meth:`plan`'s computation, on the VP path: the start is the first timestep."""
        timesteps = self.img2img_timesteps(strength, start)
        t = int(timesteps[0])
        return Plan(strength, start, timesteps, self.nfe_of(len(timesteps)), t,
                    self.schedule.snr(t))

    def img2img_timesteps(self, strength: float, start: str = "exact") -> Tensor:
        """The timesteps image-to-image at ``strength`` runs, the first its start (read them
        from :meth:`plan`, which computes them once).

        ``start="exact"``: ``max(1, int(n * strength))`` steps from exactly
        ``t_start = int(strength * T) - 1`` toward 0, with this sampler's spacing
        (:func:`diffbench.schedule.make_start_timesteps`). ``start="diffusers"``: the last
        ``min(int(n * strength), n)`` of :attr:`timesteps` (diffusers' img2img pipelines). For
        DDPM over all T timesteps the two coincide (``t_start, ..., 0``).
        """
        check_start(start)
        if start == "diffusers":
            return self.timesteps[self.num_steps - img2img_num_steps(self.num_steps, strength) :]
        t_start = exact_start(self.schedule.num_timesteps, strength)
        return make_start_timesteps(t_start, max(1, int(self.num_steps * strength)), self.spacing)

    def nfe_of(self, steps: int) -> int:
        """Network evaluations of a :meth:`denoise` over ``steps`` timesteps: one each here; a
        sampler that calls the model more often says so."""
        return steps

    def nfe(self, strength: float = 1.0, start: str = "exact") -> int:
        """Network evaluations of one :meth:`img2img` call (its :meth:`plan`'s)."""
        return self.plan(strength, start).nfe

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run every timestep from ``x_T`` (pure noise at the first timestep) down to x_0."""
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
        """SDEdit (Meng et al. 2022): noise ``x0`` to the start of its :meth:`plan` (``start``:
        ``"exact"`` or ``"diffusers"``) with ``add_noise`` and denoise it back."""
        timesteps = self.plan(strength, start).timesteps
        if noise is None:
            noise = randn_like(x0, generator)
        x_t = self.add_noise(x0, noise, timesteps[0])
        return self.denoise(model, x_t, timesteps, generator, progress, callback)

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """``x0`` noised to timestep ``t``, where a :meth:`denoise` call from ``t`` starts: the
        schedule's ``add_noise`` (a flow sampler's is ``scale_noise``)."""
        return self.schedule.add_noise(x0, noise, int(t))

    def denoise(
        self,
        model: Model,
        x: Tensor,
        timesteps: Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> Tensor:
        """The loop: from ``x`` at ``timesteps[0]``, :meth:`advance_with` the network at each
        timestep. ``timesteps``: any strictly decreasing sequence in [0, T) (all of
        :attr:`timesteps`, a tail, an exact start's); each step's coefficients come from it.
        ``callback``, as k-diffusion's: called after each step with ``{"i", "t", "x", "x0"}``,
        the step's index and timestep, the state it started from, and the x0 its first
        evaluation predicts."""
        state: dict = {}
        first: list[Tensor] = []  # the step's first eps, for the callback

        def predict(x_t: Tensor, t: int) -> Tensor:
            eps = self.call(model, x_t, t)
            if callback is not None and not first:
                first.append(eps)
            return eps

        for t in self._progress(timesteps, progress):
            first.clear()
            x_next = self.advance_with(predict, t, x, state, generator)
            if callback is not None:
                callback({"i": t.index, "t": int(t), "x": x,
                          "x0": self.predict_x0(first[0], x, t.alpha_bar)})
            x = x_next
        return x

    def _progress(self, timesteps: Tensor, progress: bool) -> list[Timestep]:
        steps = self.steps_for(timesteps)
        desc = f"{self.label} ({len(steps)} steps)"
        return tqdm(steps, desc=desc, disable=not progress, leave=False)

    def call(self, model: Model, x: Tensor, t: int) -> Tensor:
        """``model(x, t)`` with ``t`` a LongTensor [B] on ``x``'s device, read as eps: a
        v-prediction network's output becomes eps through
        :func:`~diffbench.sampling.prediction.vp_x0_eps`."""
        output = model(x, torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long))
        _check_same_shape("eps", output, x)
        if self.prediction == "eps":
            return output
        return vp_x0_eps(self.prediction, output, x, self._alphas_cumprod[int(t)])[1]

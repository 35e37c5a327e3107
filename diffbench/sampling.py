"""Reverse-process samplers: DDPM ancestral sampling and DDIM, plus SDEdit image-to-image.

Numerics follow diffusers' ``DDPMScheduler`` and ``DDIMScheduler`` (defaults
``clip_sample=True``, ``prediction_type="epsilon"``, ``set_alpha_to_one=True``,
``steps_offset=0``) so the same model outputs and noise give the same numbers. Two documented
departures, both invisible with the default ``leading`` spacing:

* the previous timestep is the next element of :attr:`timesteps` (diffusers uses
  ``t - T // n``, which is wrong when the spacing does not step by ``T // n``, as with
  ``linspace`` and ``trailing`` at some step counts);
* the final step adds no noise (diffusers adds noise whenever ``t > 0``; with ``leading``
  spacing the final step is ``t = 0``, and otherwise its variance is ~0 anyway).

Unlike diffusers' schedulers, a sampler is immutable: its step count and spacing are fixed at
construction, so there is no ``set_timesteps`` state to forget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.errors import InputError
from diffbench.schedule import NoiseSchedule

Model = Callable[[Tensor, Tensor], Tensor]
"""Any callable ``model(x_t, t) -> eps`` with ``t`` a LongTensor of shape [B]."""

SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("fixed_small", "fixed_large")


def make_timesteps(num_timesteps: int, num_steps: int, spacing: str = "leading") -> Tensor:
    """The ``num_steps`` timesteps a sampler visits, strictly decreasing, in [0, T).

    Spacings as in diffusers (and Lin et al. 2023, "Common Diffusion Noise Schedules and
    Sample Steps are Flawed", table 2): ``leading`` = ``arange(n) * (T // n)``, ``trailing`` =
    ``round(T - arange(n) * T / n) - 1``, ``linspace`` = ``round(linspace(0, T - 1, n))``.
    Rounding is half-to-even, as numpy's.
    """
    if spacing not in SPACINGS:
        raise InputError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    _check_num_steps(num_steps, num_timesteps)
    # The float arithmetic mirrors numpy's arange and linspace (which diffusers uses), so values
    # that land on .5 round the same way.
    steps = torch.arange(num_steps, dtype=torch.float64)
    if spacing == "leading":
        timesteps = steps * (num_timesteps // num_steps)
    elif spacing == "trailing":
        delta = (num_timesteps - num_timesteps / num_steps) - num_timesteps
        return (torch.round(num_timesteps + steps * delta) - 1).long()
    else:
        timesteps = steps * ((num_timesteps - 1) / max(num_steps - 1, 1))
        timesteps[-1] = 0 if num_steps == 1 else num_timesteps - 1
        timesteps = torch.round(timesteps)
    return timesteps.long().flip(0)


def img2img_num_steps(num_steps: int, strength: float) -> int:
    """How many of ``num_steps`` an image-to-image run at ``strength`` takes, as in diffusers'
    img2img pipelines: ``min(int(num_steps * strength), num_steps)``."""
    if isinstance(strength, bool) or not isinstance(strength, Real) or not 0 < strength <= 1:
        raise InputError(f"strength must be a number in (0, 1], got {strength!r}")
    steps = min(int(num_steps * strength), num_steps)
    if steps < 1:
        raise InputError(
            f"strength {strength!r} leaves no denoising step out of {num_steps}; "
            f"use a strength >= {1 / num_steps:g} or more steps"
        )
    return steps


def _check_num_steps(num_steps: int, num_timesteps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise InputError(f"num_steps must be an integer, got {num_steps!r}")
    if not 1 <= num_steps <= num_timesteps:
        raise InputError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")


def _check_same_shape(name: str, value: Tensor, x: Tensor) -> None:
    if value.shape != x.shape:
        raise InputError(f"{name} shape {tuple(value.shape)} must equal {tuple(x.shape)}")


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to
    ``x``'s (as diffusers' ``randn_tensor``), so a seed gives the same noise on CPU and CUDA."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class Sampler:
    """What DDPM and DDIM share: the timestep sequence, the sampling loop and img2img.

    Subclasses provide :meth:`step`; per-step coefficients are precomputed in float64 as Python
    floats, so a step works on any device and dtype without host syncs.
    """

    def __init__(
        self, schedule: NoiseSchedule, num_steps: int, spacing: str, clip_sample: bool
    ) -> None:
        self.schedule = schedule
        self.num_steps = num_steps
        self.spacing = spacing
        self.clip_sample = clip_sample
        self.timesteps = make_timesteps(schedule.num_timesteps, num_steps, spacing)
        steps = self.timesteps.tolist()
        self._index = {t: i for i, t in enumerate(steps)}
        alphas_cumprod = schedule.alphas_cumprod.tolist()
        self._alpha_bar = [alphas_cumprod[t] for t in steps]
        # After the last timestep comes alpha_bar = 1 (diffusers' set_alpha_to_one=True).
        self._alpha_bar_prev = self._alpha_bar[1:] + [1.0]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_steps={self.num_steps}, spacing={self.spacing!r}, "
            f"schedule={self.schedule!r})"
        )

    def _step_index(self, t: int | Tensor) -> int:
        index = self._index.get(int(t))
        if index is None:
            first, last = self.timesteps[0].item(), self.timesteps[-1].item()
            raise InputError(
                f"timestep {int(t)} is not one of this sampler's {self.num_steps} timesteps "
                f"({self.spacing} spacing: {first} .. {last})"
            )
        return index

    def _predict_x0(self, eps: Tensor, x_t: Tensor, alpha_bar: float) -> Tensor:
        """x0 from the eps prediction (DDPM eq. 15), clipped to [-1, 1] when ``clip_sample``."""
        x0 = (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        return x0.clamp(-1, 1) if self.clip_sample else x0

    def step(
        self,
        eps: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One reverse step from timestep ``t`` to the next timestep of the sequence."""
        raise NotImplementedError

    def img2img_timesteps(self, strength: float) -> Tensor:
        """The last ``min(int(num_steps * strength), num_steps)`` timesteps (diffusers' img2img)."""
        return self.timesteps[self.num_steps - img2img_num_steps(self.num_steps, strength) :]

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        x_T: Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Run every timestep from ``x_T`` (pure noise at the first timestep) down to x_0."""
        return self._denoise(model, x_T, self.timesteps, generator, progress)

    @torch.no_grad()
    def img2img(
        self,
        model: Model,
        x0: Tensor,
        strength: float,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """SDEdit (Meng et al. 2022): noise ``x0`` to the first of :meth:`img2img_timesteps`
        with ``add_noise`` and denoise it back through the rest."""
        timesteps = self.img2img_timesteps(strength)
        if noise is None:
            noise = randn_like(x0, generator)
        x_t = self.schedule.add_noise(x0, noise, int(timesteps[0]))
        return self._denoise(model, x_t, timesteps, generator, progress)

    def _denoise(
        self,
        model: Model,
        x: Tensor,
        timesteps: Tensor,
        generator: torch.Generator | None,
        progress: bool,
    ) -> Tensor:
        desc = f"{type(self).__name__.removesuffix('Sampler')} ({len(timesteps)} steps)"
        for t in tqdm(timesteps.tolist(), desc=desc, disable=not progress, leave=False):
            t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x = self.step(model(x, t_batch), t, x, generator=generator)
        return x


class DDPMSampler(Sampler):
    """Ancestral sampling, Ho et al. 2020, Algorithm 2: x_{t-1} ~ q(x_{t-1} | x_t, x0_hat).

    ``variance="fixed_small"`` uses the posterior variance beta_tilde (eq. 7); ``"fixed_large"``
    uses beta_t (both from sec. 3.2). ``num_steps`` below T skips timesteps ("leading" spacing
    by default), using the betas implied by the alpha_bar of consecutive visited timesteps.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        variance: str = "fixed_small",
        spacing: str = "leading",
        clip_sample: bool = True,
    ) -> None:
        if variance not in VARIANCES:
            raise InputError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")
        super().__init__(
            schedule,
            schedule.num_timesteps if num_steps is None else num_steps,
            spacing,
            clip_sample,
        )
        self.variance = variance
        self._coefficients = [
            self._posterior(a_t, a_prev)
            for a_t, a_prev in zip(self._alpha_bar, self._alpha_bar_prev)
        ]

    def _posterior(self, a_t: float, a_prev: float) -> tuple[float, float, float]:
        """(x0 coefficient, x_t coefficient, std) of q(x_{t-1} | x_t, x0), DDPM eq. 6-7."""
        beta_t = 1 - a_t / a_prev
        x0_coef = math.sqrt(a_prev) * beta_t / (1 - a_t)
        xt_coef = math.sqrt(1 - beta_t) * (1 - a_prev) / (1 - a_t)
        if self.variance == "fixed_small":
            variance = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
        else:
            variance = beta_t
        return x0_coef, xt_coef, math.sqrt(variance)

    def step(
        self,
        eps: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Posterior mean from the predicted x0, plus ``std * noise`` except at the final step."""
        _check_same_shape("eps", eps, x_t)
        index = self._step_index(t)
        x0_coef, xt_coef, std = self._coefficients[index]
        x_prev = x0_coef * self._predict_x0(eps, x_t, self._alpha_bar[index]) + xt_coef * x_t
        if index == self.num_steps - 1:
            return x_prev
        if noise is None:
            noise = randn_like(x_t, generator)
        _check_same_shape("noise", noise, x_t)
        return x_prev + std * noise


class DDIMSampler(Sampler):
    """Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12.

    ``eta=0`` is the deterministic DDIM sampler (no randomness after the initial noise);
    ``eta=1`` over all timesteps is DDPM with the posterior variance. ``eta`` must lie in
    [0, 1]: beyond 1 the direction term's square root goes negative.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int = 50,
        eta: float = 0.0,
        spacing: str = "leading",
        clip_sample: bool = True,
    ) -> None:
        if isinstance(eta, bool) or not isinstance(eta, Real) or not 0 <= eta <= 1:
            raise InputError(f"eta must be a number in [0, 1], got {eta!r}")
        super().__init__(schedule, num_steps, spacing, clip_sample)
        self.eta = float(eta)
        self._coefficients = [
            self._update(a_t, a_prev) for a_t, a_prev in zip(self._alpha_bar, self._alpha_bar_prev)
        ]

    def _update(self, a_t: float, a_prev: float) -> tuple[float, float, float]:
        """(x0 coefficient, eps coefficient, sigma) of eq. 12, sigma from eq. 16."""
        sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        return math.sqrt(a_prev), math.sqrt(max(1 - a_prev - sigma**2, 0.0)), sigma

    def step(
        self,
        eps: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z.

        As in diffusers, the direction term uses the model's eps, not one recomputed from the
        clipped x0 (``use_clipped_model_output=False``).
        """
        _check_same_shape("eps", eps, x_t)
        index = self._step_index(t)
        x0_coef, eps_coef, sigma = self._coefficients[index]
        x_prev = x0_coef * self._predict_x0(eps, x_t, self._alpha_bar[index]) + eps_coef * eps
        if sigma == 0.0:
            return x_prev
        if noise is None:
            noise = randn_like(x_t, generator)
        _check_same_shape("noise", noise, x_t)
        return x_prev + sigma * noise

"""Noise schedules of the forward diffusion process q(x_t | x_0).

Follows Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM), eq. 4:
``x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps``, and produces the same
``betas`` and ``alphas_cumprod`` as diffusers' ``DDPMScheduler`` for ``beta_schedule`` =
``linear``, ``scaled_linear`` and ``squaredcos_cap_v2`` (our ``cosine``). The tables are
computed in float64 (diffusers uses float32; the two agree to ~1e-7) so that alpha_bar stays
strictly decreasing even for long schedules; tensor math casts them to the data's dtype.

:func:`make_timesteps` discretises a schedule into the timesteps a sampler visits, with
diffusers' spacings; :func:`img2img_num_steps` says how many of them image-to-image runs;
:func:`make_start_timesteps` spreads steps below an exact start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real

import torch
from torch import Tensor

from diffbench.core.errors import InputError

SPACINGS = ("leading", "trailing", "linspace")


def _check_timesteps(num_timesteps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise InputError(f"num_timesteps must be an integer >= 1, got {num_timesteps!r}")


def _check_beta_range(beta_start: float, beta_end: float) -> None:
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise InputError(
            f"betas must satisfy 0 < beta_start <= beta_end < 1, "
            f"got beta_start={beta_start!r}, beta_end={beta_end!r}"
        )


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


def make_start_timesteps(start: int, num_steps: int, spacing: str = "leading") -> Tensor:
    """``num_steps`` timesteps from exactly ``start`` down toward 0, strictly decreasing: the
    spacing applied to the ``start + 1`` timesteps [0, start] (image-to-image's exact start).

    ``trailing`` and ``linspace`` are :func:`make_timesteps` over ``start + 1`` timesteps,
    which begin at ``start``. ``leading``'s grid begins below the top of its range, so here it
    is anchored at the top instead, in integer arithmetic: ``start - floor(i * (start + 1) /
    num_steps)`` (``start - i * stride`` where ``num_steps`` divides ``start + 1``; a floored
    stride ``(start + 1) // num_steps`` would stop far above 0 when the ratio is small). So
    all three begin at ``start`` and end below ``(start + 1) / num_steps`` (linspace at 0);
    with ``num_steps = start + 1`` they are ``start, start - 1, ..., 0``; one step is
    ``[start]``.
    """
    if spacing not in SPACINGS:
        raise InputError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InputError(f"start must be an integer >= 0, got {start!r}")
    _check_num_steps(num_steps, start + 1)
    if num_steps == 1:
        return torch.tensor([start])
    if spacing == "leading":
        return start - torch.arange(num_steps) * (start + 1) // num_steps
    return make_timesteps(start + 1, num_steps, spacing)


def _check_num_steps(num_steps: int, num_timesteps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise InputError(f"num_steps must be an integer, got {num_steps!r}")
    if not 1 <= num_steps <= num_timesteps:
        raise InputError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")



@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete variance schedule ``betas[t]``, t = 0 .. num_timesteps - 1.

    Build one with :meth:`linear`, :meth:`scaled_linear` or :meth:`cosine`, or pass your own
    ``betas`` (a 1-D tensor with values in (0, 1)).
    """

    betas: Tensor
    name: str = "custom"
    alphas_cumprod: Tensor = field(init=False, repr=False)
    _tables: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu()
        if betas.dim() != 1 or betas.numel() < 1:
            raise InputError(
                f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise InputError(
                f"every beta must lie in (0, 1); got min {betas.min().item()!r}, "
                f"max {betas.max().item()!r}"
            )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if not bool((alphas_cumprod > 0).all() and (alphas_cumprod.diff() < 0).all()):
            raise InputError(
                f"these {betas.numel()} betas erase the signal: alpha_bar underflows to "
                f"{alphas_cumprod[-1].item():.3g} in float64, so x0 cannot be recovered from x_t; "
                f"use smaller betas or fewer timesteps"
            )
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """Betas spaced linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4)."""
        _check_timesteps(num_timesteps)
        _check_beta_range(beta_start, beta_end)
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        return cls(betas, name="linear")

    @classmethod
    def scaled_linear(
        cls, num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> NoiseSchedule:
        """Square roots of the betas spaced linearly: Stable Diffusion's latent schedule
        (Rombach et al. 2022; diffusers ``beta_schedule="scaled_linear"``)."""
        _check_timesteps(num_timesteps)
        _check_beta_range(beta_start, beta_end)
        roots = torch.linspace(
            math.sqrt(beta_start), math.sqrt(beta_end), num_timesteps, dtype=torch.float64
        )
        return cls(roots**2, name="scaled_linear")

    @classmethod
    def cosine(
        cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999
    ) -> NoiseSchedule:
        """alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas capped at ``max_beta``
        (Nichol & Dhariwal 2021, eq. 17; diffusers ``squaredcos_cap_v2``)."""
        _check_timesteps(num_timesteps)
        if not 0.0 < max_beta < 1.0:
            raise InputError(f"max_beta must lie in (0, 1), got {max_beta!r}")
        if s < 0:
            raise InputError(f"s must be >= 0, got {s!r}")
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000, **kwargs: float) -> NoiseSchedule:
        """``linear``, ``scaled_linear`` or ``cosine`` by name (used by YAML configs)."""
        builders = {"linear": cls.linear, "scaled_linear": cls.scaled_linear, "cosine": cls.cosine}
        if name not in builders:
            raise InputError(f"unknown schedule {name!r}; allowed: {sorted(builders)}")
        return builders[name](num_timesteps, **kwargs)

    # -- properties -------------------------------------------------------------------------

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, num_timesteps={self.num_timesteps})"

    # -- tensor math ------------------------------------------------------------------------

    def _alpha_bar(self, t: Tensor | int, like: Tensor) -> Tensor:
        """alpha_bar[t] on ``like``'s device and dtype, shaped to broadcast against it.

        The table is copied to each device once; timesteps already on that device are used in
        place, so a CUDA training step costs no host sync. Range checks run for CPU timesteps.
        """
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise InputError(f"timesteps must be integers, got dtype {t.dtype}")
        if t.device.type == "cpu" and t.numel():
            low, high = int(t.min()), int(t.max())
            if low < 0 or high >= self.num_timesteps:
                raise InputError(
                    f"timesteps must lie in [0, {self.num_timesteps}), got range [{low}, {high}]"
                )
        if t.dim() == 0 and t.device.type == "cpu":
            value = float(self.alphas_cumprod[t])
            return torch.full((1,) * like.dim(), value, dtype=like.dtype, device=like.device)
        key = (t.device, like.dtype)
        if key not in self._tables:
            self._tables[key] = self.alphas_cumprod.to(device=t.device, dtype=like.dtype)
        ab = self._tables[key][t].to(like.device)
        return ab.reshape(ab.shape + (1,) * (like.dim() - ab.dim()))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """Sample q(x_t | x_0): ``sqrt(ab_t) * x0 + sqrt(1 - ab_t) * noise`` (DDPM eq. 4)."""
        if x0.shape != noise.shape:
            raise InputError(
                f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}"
            )
        ab = self._alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def x0_from_eps(self, x_t: Tensor, eps: Tensor, t: Tensor | int) -> Tensor:
        """Invert eq. 4 for x0 given the noise: ``(x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)``."""
        ab = self._alpha_bar(t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def eps_from_x0(self, x_t: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """Invert eq. 4 for the noise given x0: ``(x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)``."""
        ab = self._alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    # -- signal-to-noise ratio --------------------------------------------------------------

    def snr(self, t: int) -> float:
        """``ab_t / (1 - ab_t)``, the signal-to-noise ratio of x_t (Kingma et al. 2021)."""
        alpha_bar = float(self.alphas_cumprod[t])
        return alpha_bar / (1 - alpha_bar)

    def timestep_for_snr(self, snr: float) -> int:
        """The timestep whose SNR is nearest ``snr`` in log scale: where another path's noise
        level (a flow sigma) stands on this schedule, as an equal-SNR currency; 0 (pure noise)
        is the last timestep."""
        if not snr >= 0:
            raise InputError(f"snr must be >= 0, got {snr!r}")
        if snr == 0:
            return self.num_timesteps - 1
        log_snr = (self.alphas_cumprod / (1 - self.alphas_cumprod)).log()
        return int((log_snr - math.log(snr)).abs().argmin())

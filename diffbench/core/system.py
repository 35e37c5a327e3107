"""The System protocol: what the harness measures, and the policies of the two spaces.

A system is anything that translates digits: ``system(x0, strength, generator) -> x`` with x0
and x float tensors [B, 1, 28, 28] in [-1, 1]. Scoring, timing, reports, MLflow logging, the
gate and the benches take any object that has the attributes and methods below;
:class:`diffbench.systems.translate.Translator` (diffbench's own samplers and models, or a user's)
and :class:`diffbench.systems.peer.PeerTranslator` (diffusers' UNet and scheduler) are two of them.

The policies every system of a space follows, each defined here once:

* pixel space clips x0 predictions to the data range [-1, 1]; latent space does not (latents are
  not bounded; diffusers' latent pipelines also run with ``clip_sample=False``);
* latent space works on the VAE's posterior mean times its stored scale factor, and decodes
  ``latent / scale factor`` (Rombach et al. 2022, sec. 4.3.2).

Optional: ``system.noised(x0, t, generator) -> (space, x_t)``, ``x0`` noised to timestep ``t``
in the space the system diffuses in (a Translator: pixel x_t, or the scaled latents z_t), which
the noise-aware classifier of that space reads (see :func:`noised`). A system without it is
noised in pixel space by its ``add_noise``.

Imports only the leaves :mod:`diffbench.core.errors` and :mod:`diffbench.core.plan`, so every layer
may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.plan import Plan

SPACES = ("pixel", "latent")
IMAGE_SHAPE = (1, 28, 28)


@runtime_checkable
class System(Protocol):
    """An image-to-image system under measurement."""

    name: str  # e.g. "DDIM-50", "LDM-DDPM-1000": the label of results, plots and MLflow
    space: str  # one of SPACES
    sampler_name: str  # e.g. "ddim", a plug-in's "package.module:Name"
    num_steps: int  # its sampler's step count (at strength 1)
    device: torch.device
    facts: dict[str, Any]  # train_seconds, train_cpu_seconds, unet_parameters, vae_parameters

    def __call__(
        self, x0: Tensor, strength: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Noise ``x0`` to ``strength``, denoise it back (seeded by ``generator``)."""

    def plan(self, strength: float) -> Plan:
        """Its call's :class:`~diffbench.core.plan.Plan` at ``strength``: the start timestep it
        noises to (the first it denoises from), its timesteps and its network evaluations."""

    def flops_per_image(self, strength: float) -> int:
        """Forward FLOPs of one translation at ``strength``."""

    def add_noise(self, x0: Tensor, noise: Tensor, t: int) -> Tensor:
        """Its forward process q(x_t | x0) applied to pixels (e.g. the noised column of grids)."""

    def checkpoint_sha256(self) -> dict[str, str]:
        """File name -> sha256 of each checkpoint file it loaded (empty when none)."""


MEMBERS = tuple(dict.fromkeys(
    name for name in (*System.__annotations__, *vars(System)) if not name.startswith("_")
))


def check_system(system: Any) -> None:
    """Raise a ValueError naming what ``system`` lacks of the :class:`System` protocol."""
    needed = [name for name in MEMBERS if not hasattr(system, name)]
    if needed or not callable(system):
        raise InputError(
            f"{system!r} is not a diffbench System: it lacks {', '.join(needed) or '__call__'}; "
            f"a System has {', '.join(MEMBERS)} and __call__(x0, strength, generator) "
            f"(see diffbench.core.system.System)"
        )
    if system.space not in SPACES:
        raise InputError(f"{system.name}: unknown space {system.space!r}; allowed: "
                         f"{', '.join(SPACES)}")


def generator_for(system: Any, seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` for ``system``'s calls: its own ``generator(seed)`` when
    it has one (a Translator's draws on its noise device), else one on the system's device (so
    noise is drawn where the system runs, for every system alike)."""
    make = getattr(system, "generator", None)
    if make is not None:
        return make(seed)
    return torch.Generator(torch.device(system.device)).manual_seed(seed)


def noised(
    system: Any, x0: Tensor, t: int, generator: torch.Generator | None = None
) -> tuple[str, Tensor]:
    """(space, x_t): ``x0`` noised to timestep ``t`` in ``system``'s own space when it has a
    ``noised`` method, else in pixel space by its ``add_noise`` (noise from ``generator``)."""
    own = getattr(system, "noised", None)
    if own is not None:
        return own(x0, t, generator)
    device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device).to(x0.device)
    return "pixel", system.add_noise(x0, noise, t)


def compile_seconds(system: Any) -> float:
    """Seconds ``system`` has spent compiling or capturing graphs so far (0 when it never
    does)."""
    return float(getattr(system, "compile_seconds", 0.0))


def check_digits(x0: Tensor) -> None:
    """Raise a ValueError unless ``x0`` is a batch of MNIST digits, [B, 1, 28, 28]."""
    if x0.dim() != 4 or tuple(x0.shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"x0 must be [B, 1, 28, 28] in [-1, 1], got shape {tuple(x0.shape)}")


def clip_sample(space: str) -> bool:
    """Whether samplers clip x0 predictions in ``space``: in pixel space only."""
    if space not in SPACES:
        raise InputError(f"unknown space {space!r}; allowed: {', '.join(SPACES)}")
    return space == "pixel"


def to_latent(vae: torch.nn.Module, x: Tensor, encode: Callable | None = None) -> Tensor:
    """Digits -> the latents diffusion runs on: the posterior mean times the scale factor
    (``encode``: the VAE's encode, or a compiled version of it)."""
    return (encode or vae.encode)(x)[0] * vae.scale_factor


def from_latent(vae: torch.nn.Module, z: Tensor, decode: Callable | None = None) -> Tensor:
    """Latents diffusion produced -> digits: ``decode(z / scale factor)``."""
    return (decode or vae.decode)(z / vae.scale_factor)

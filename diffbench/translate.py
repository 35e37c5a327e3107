"""Translator: a sampler and a network -> one image-to-image System, in pixel or latent space.

Pixel space runs the sampler's ``img2img`` on the digits with the pixel UNet's EMA weights.
Latent space (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models") encodes with the VAE, runs ``img2img`` on the latents with the latent UNet and decodes
(scaling and clipping follow :mod:`diffbench.system`). Weights load once, in channels-last
layout; calls run under ``torch.inference_mode`` on the chosen device.

The sampler is any registered one or a ``"package.module:Name"`` :class:`Sampler` subclass; the
network is the shipped checkpoint of the space or, named as ``"package.module:factory"``, a
plain ``nn.Module`` ``model(x_t, t) -> eps`` that the factory returns.

Every translation starts at exactly ``t_start = int(strength * T) - 1`` (``start="exact"``, see
:meth:`diffbench.sampling.Sampler.img2img_timesteps`), so systems with different samplers and
step counts denoise from the same noise level at the same strength; ``start="diffusers"``
gives diffusers' img2img convention (parity) instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.checkpoints import load_model, require_metadata, sha256_file
from diffbench.config import SystemConfig
from diffbench.models import flops_per_image
from diffbench.plugins import load_object
from diffbench.sampling import SAMPLERS, STARTS, Sampler, make_sampler, sampler_class
from diffbench.schedule import NoiseSchedule
from diffbench.system import (
    IMAGE_SHAPE,
    SPACES,
    check_digits,
    clip_sample,
    from_latent,
    to_latent,
)

# SAMPLERS, SPACES, IMAGE_SHAPE and check_digits lived here before; still importable from here.
__all__ = [
    "IMAGE_SHAPE", "SAMPLERS", "SPACES", "Translator", "check_digits", "load_plugin_model",
]
PLUGIN_MODEL = (
    "a plug-in model is 'package.module:factory' naming a callable that returns a "
    "torch.nn.Module model(x_t, t) -> eps, with t a LongTensor [B] and eps shaped like x_t"
)


def load_plugin_model(
    factory: str | Callable[[], Any], shape: tuple[int, ...], device: torch.device
) -> torch.nn.Module:
    """The network a factory (or its ``package.module:factory`` name) returns, checked with one
    call on ``shape`` inputs; a ValueError naming it and what a model must be otherwise."""
    label = factory if isinstance(factory, str) else getattr(factory, "__qualname__", factory)
    if isinstance(factory, str):
        factory = load_object(factory, PLUGIN_MODEL)
    if not callable(factory):
        raise ValueError(f"model {label!r} is {factory!r}, not a callable; {PLUGIN_MODEL}")
    try:
        model = factory()
    except Exception as error:  # the user's code may fail in any way
        raise ValueError(f"model {label!r} failed ({type(error).__name__}: {error}); "
                         f"{PLUGIN_MODEL}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model {label!r} returned a {type(model).__name__}, not a "
                         f"torch.nn.Module; {PLUGIN_MODEL}")
    model = model.to(device).eval()
    x, t = torch.zeros(1, *shape, device=device), torch.zeros(1, dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            eps = model(x, t)
    except Exception as error:  # the user's code may fail in any way
        raise ValueError(f"model {label!r} cannot be called on x_t {tuple(x.shape)} "
                         f"({type(error).__name__}: {error}); {PLUGIN_MODEL}") from None
    if not isinstance(eps, Tensor) or eps.shape != x.shape:
        got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(f"model {label!r} returned {got} for x_t {tuple(x.shape)}; "
                         f"{PLUGIN_MODEL}")
    return model


class Translator:
    """``translator(x0, strength, generator=None) -> x``: noise to ``strength``, denoise back.
    A :class:`diffbench.system.System`."""

    def __init__(
        self,
        unet: torch.nn.Module,
        sampler: Sampler,
        vae: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
        facts: dict[str, Any] | None = None,
        name: str | None = None,
        checkpoints: dict[str, Path] | None = None,
        start: str = "exact",
    ) -> None:
        if start not in STARTS:
            raise ValueError(f"unknown start {start!r}; allowed: {', '.join(STARTS)}")
        # Channels-last weights: oneDNN's (and cuDNN's) faster convolution layout; measured on
        # the 2-core CPU at batch 64, the pixel UNet's forward 150 -> 122 ms and the VAE's
        # decode 74 -> 46 ms, outputs equal within 5e-6.
        self.unet = unet.to(memory_format=torch.channels_last)
        self.vae = vae.to(memory_format=torch.channels_last) if vae is not None else None
        self.sampler = sampler
        self.device = torch.device(device)
        self.space = "latent" if vae is not None else "pixel"
        self.facts = facts or {}
        self._name = name
        self._checkpoints = checkpoints or {}
        self._digests: dict[str, str] | None = None
        self.start = start

    @classmethod
    def from_checkpoints(
        cls,
        directory: str | Path = "fixtures/checkpoints",
        space: str = "pixel",
        sampler: str = "ddpm",
        num_steps: int | None = None,
        eta: float = 0.0,
        device: str | torch.device = "cpu",
        model: str | Callable[[], Any] | None = None,
        name: str | None = None,
    ) -> Translator:
        """Load ``pixel.safetensors`` (or ``latent.safetensors`` + ``vae.safetensors``) from
        ``directory``; ``model`` (a factory or its ``package.module:factory`` name) replaces the
        UNet checkpoint. ``sampler``: a registered name or ``package.module:Name``;
        ``num_steps=None``: the sampler's default (all timesteps for DDPM, 50 for DDIM)."""
        clip = clip_sample(space)  # an unknown space fails here
        sampler_class(sampler)  # an unknown sampler fails before any file is read
        directory, device = Path(directory), torch.device(device)
        files = {"vae.safetensors": directory / "vae.safetensors"} if space == "latent" else {}
        vae, vae_metadata = (None, {})
        if space == "latent":
            vae, vae_metadata = load_model(files["vae.safetensors"], device)
            require_metadata(files["vae.safetensors"], vae_metadata, "train_seconds", "stats")
        if model is None:
            files[f"{space}.safetensors"] = directory / f"{space}.safetensors"
            unet, metadata = load_model(files[f"{space}.safetensors"], device)
            require_metadata(files[f"{space}.safetensors"], metadata, "train_seconds", "stats")
        else:
            shape = tuple(vae.latent_shape) if vae is not None else IMAGE_SHAPE
            unet = load_plugin_model(model, shape, device)
            parameters = sum(p.numel() for p in unet.parameters())
            metadata = {"train_seconds": math.nan, "stats": {"parameters": parameters}}
        schedule_config = metadata.get("schedule") or {"name": "linear", "num_timesteps": 1000}
        schedule = NoiseSchedule.from_name(
            schedule_config["name"], schedule_config["num_timesteps"]
        )
        chosen = make_sampler(sampler, schedule, num_steps, clip_sample=clip, eta=eta)
        facts = {
            "train_seconds": metadata["train_seconds"] + vae_metadata.get("train_seconds", 0.0),
            "unet_parameters": metadata["stats"]["parameters"],
            "vae_parameters": vae_metadata["stats"]["parameters"] if vae is not None else 0,
        }
        return cls(unet, chosen, vae, device, facts, name, files)

    @classmethod
    def from_config(
        cls, system: SystemConfig, directory: str | Path, device: str | torch.device = "cpu"
    ) -> Translator:
        """The system a compare config names (see :class:`diffbench.config.SystemConfig`)."""
        return cls.from_checkpoints(directory, system.space, system.sampler, system.steps,
                                    system.eta, device, model=system.model, name=system.name)

    @property
    def name(self) -> str:
        """E.g. ``DDIM-50`` (pixel) or ``LDM-DDPM-1000`` (latent): the sampler's label."""
        if self._name:
            return self._name
        prefix = "LDM-" if self.space == "latent" else ""
        return f"{prefix}{self.sampler.label}-{self.sampler.num_steps}"

    @property
    def sampler_name(self) -> str:
        """The registered name (``ddim``), or ``package.module:Name`` for a plug-in."""
        cls = type(self.sampler)
        return cls.name or f"{cls.__module__}:{cls.__qualname__}"

    @property
    def num_steps(self) -> int:
        return self.sampler.num_steps

    def start_timestep(self, strength: float) -> int:
        """The timestep a translation at ``strength`` starts from: ``int(strength * T) - 1``
        (299 at 0.3 with T = 1000) whatever the sampler and step count."""
        return int(self.sampler.img2img_timesteps(strength, self.start)[0])

    def evaluations(self, strength: float) -> int:
        """UNet calls per translation (the sampler's NFE: Heun's are two a step but the last)."""
        return self.sampler.nfe(strength, self.start)

    def add_noise(self, x0: Tensor, noise: Tensor, t: int) -> Tensor:
        return self.sampler.schedule.add_noise(x0, noise, t)

    def checkpoint_sha256(self) -> dict[str, str]:
        if self._digests is None:
            self._digests = {name: sha256_file(p) for name, p in self._checkpoints.items()}
        return self._digests

    def flops_per_image(self, strength: float) -> int:
        """Forward FLOPs of one translation at ``strength``: the UNet once per evaluation, plus
        the VAE's encode and decode in latent space."""
        steps = self.evaluations(strength)
        x = torch.zeros(1, *IMAGE_SHAPE, device=self.device)
        t = torch.zeros(1, dtype=torch.long, device=self.device)
        if self.vae is None:
            return steps * flops_per_image(self.unet, x, t)
        z = torch.zeros(1, *self.vae.latent_shape, device=self.device)
        return (
            flops_per_image(self.vae.encode, x)
            + steps * flops_per_image(self.unet, z, t)
            + flops_per_image(self.vae.decode, z)
        )

    @torch.inference_mode()
    def __call__(
        self, x0: Tensor, strength: float, generator: torch.Generator | None = None
    ) -> Tensor:
        check_digits(x0)
        x0 = x0.to(self.device)
        if self.vae is None:
            return self.sampler.img2img(
                self.unet, x0, strength, generator=generator, start=self.start
            ).clamp(-1, 1)
        z = self.sampler.img2img(
            self.unet, to_latent(self.vae, x0), strength, generator=generator, start=self.start
        )
        return from_latent(self.vae, z).clamp(-1, 1)

    @torch.inference_mode()
    def generate(self, x_T: Tensor) -> Tensor:
        """Digits sampled from pure noise ``x_T`` (latents in latent space) by every step."""
        x = self.sampler.sample(self.unet, x_T.to(self.device))
        return (x if self.vae is None else from_latent(self.vae, x)).clamp(-1, 1)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The shape of one image in the space the sampler runs in."""
        return tuple(self.vae.latent_shape) if self.vae is not None else IMAGE_SHAPE

"""Translator: a sampler and a network -> one image-to-image System, in pixel or latent space.

Pixel space runs the sampler's ``img2img`` on the digits with the UNet's EMA weights; latent
space (Rombach et al. 2022) encodes with the VAE, runs ``img2img`` on the latents and decodes
(scaling and clipping: :mod:`diffbench.core.system`). Weights load once
(:mod:`diffbench.systems.networks`), channels-last; calls run under ``torch.inference_mode``.
Every translation starts at exactly the strength (``start="exact"``,
:meth:`diffbench.sampling.Sampler.plan`), so systems with different samplers and step counts
denoise from the same noise level; ``start="diffusers"`` gives diffusers' img2img convention
(parity) instead.

Options, each recorded in :attr:`Translator.settings`: ``compile`` (None, ``"compile"`` or
``"cudagraphs"``: :mod:`diffbench.systems.compiled`), ``noise_device`` (``"device"``, the
default, or ``"cpu"``: :mod:`diffbench.core.runtime`) and ``tf32`` (CUDA only; off by default).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.core.plan import Plan
from diffbench.core.resources import checkpoints_dir
from diffbench.core.runtime import check_noise_device, check_tf32, noise_generator, tf32_mode
from diffbench.core.system import (
    IMAGE_SHAPE,
    SPACES,
    check_digits,
    clip_sample,
    from_latent,
    to_latent,
)
from diffbench.io.checkpoints import sha256_file
from diffbench.io.config import SystemConfig
from diffbench.models import flops_per_image
from diffbench.sampling import (
    SAMPLERS,
    Sampler,
    check_start,
    make_sampler,
    randn_like,
    resolve_sampler,
    sampler_class,
)
from diffbench.sampling.base import Callback
from diffbench.sampling.prediction import PREDICTIONS, check_prediction
from diffbench.systems.compiled import PreparedCall, check_compile, compile_network
from diffbench.systems.networks import load_networks, load_plugin_model

# SAMPLERS, SPACES, IMAGE_SHAPE and check_digits lived here before; still importable from here.
__all__ = ["IMAGE_SHAPE", "SAMPLERS", "SPACES", "Translator", "check_digits", "load_plugin_model"]


class Translator:
    """``translator(x0, strength, generator=None) -> x``: noise to ``strength``, denoise back.
    A :class:`diffbench.core.system.System`."""

    def __init__(
        self,
        unet: torch.nn.Module,
        sampler: Sampler,
        vae: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
        facts: dict[str, Any] | None = None,
        name: str | None = None,
        checkpoints: dict[str, Path] | None = None,
        compile: str | None = None,
        noise_device: str = "device",
        tf32: bool = False,
        channels_last: bool = True,
        start: str = "exact",
    ) -> None:
        check_start(start)
        self.device = torch.device(device)
        check_compile(compile, self.device, sampler)
        check_noise_device(noise_device)
        check_tf32(tf32, self.device)
        # Channels-last weights: oneDNN's (and cuDNN's) faster convolution layout; measured on
        # the 2-core CPU at batch 64, the pixel UNet's forward 150 -> 122 ms and the VAE's
        # decode 74 -> 46 ms, outputs equal within 5e-6.
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.unet = unet.to(memory_format=layout)
        self.vae = vae.to(memory_format=layout) if vae is not None else None
        self.sampler = sampler
        self.space = "latent" if vae is not None else "pixel"
        self.facts = facts or {}
        self._name = name
        self._checkpoints = checkpoints or {}
        self._digests: dict[str, str] | None = None
        self.compile, self.noise_device, self.tf32 = compile, noise_device, tf32
        self.channels_last = channels_last
        # Compiled versions of the networks (None in eager mode: the modules themselves run).
        network = (lambda fn: compile_network(fn, self.device)) if compile else (lambda fn: None)
        self._compiled_unet = network(self.unet)
        self._encode = network(self.vae.encode) if vae is not None else None
        self._decode = network(self.vae.decode) if vae is not None else None
        self._call = PreparedCall(self._translate, compile, self.device) if compile else None
        self.start = start

    @classmethod
    def from_checkpoints(
        cls,
        directory: str | Path | None = None,
        space: str = "pixel",
        sampler: str = "ddpm",
        num_steps: int | None = None,
        eta: float = 0.0,
        device: str | torch.device = "cpu",
        model: str | Callable[[], Any] | None = None,
        name: str | None = None,
        prediction: str = "eps",
        shift: float = 1.0,
        spacing: str | None = None,
        **options: Any,
    ) -> Translator:
        """A system of ``space`` from ``directory``'s checkpoints (default: the shipped ones;
        :func:`~diffbench.systems.networks.load_networks`), or ``model``'s network. ``sampler``: a
        registered name or ``package.module:Name`` (for a flow network ``euler``, ``heun`` and
        ``dpmsolver++`` are named as their flow versions); None for ``num_steps`` or
        ``spacing``: the sampler's default. ``options``: see the class."""
        clip = clip_sample(space)  # an unknown space fails here
        if prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction {prediction!r}; allowed: "
                             f"{', '.join(PREDICTIONS)}")
        sampler = resolve_sampler(sampler, prediction)
        # An unknown sampler, or one that cannot read this network, fails before any file is read.
        check_prediction(prediction, sampler_class(sampler).predictions, sampler)
        directory, device = Path(directory or checkpoints_dir()), torch.device(device)
        networks = load_networks(directory, space, prediction, model, device)
        chosen = make_sampler(sampler, networks.schedule, num_steps, clip_sample=clip, eta=eta,
                              shift=shift, spacing=spacing, prediction=prediction)
        return cls(networks.unet, chosen, networks.vae, device, networks.facts, name,
                   networks.files, **options)

    @classmethod
    def from_config(
        cls,
        system: SystemConfig,
        directory: str | Path,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> Translator:
        """The system a compare config names (see :class:`diffbench.io.config.SystemConfig`)."""
        return cls.from_checkpoints(directory, system.space, system.sampler, system.steps,
                                    system.eta, device, model=system.model, name=system.name,
                                    prediction=system.prediction, shift=system.shift,
                                    spacing=system.spacing, **options)

    @property
    def name(self) -> str:
        """E.g. ``DDIM-50`` (pixel) or ``LDM-DDPM-1000`` (latent): the sampler's label."""
        if self._name:
            return self._name
        prefix = "LDM-" if self.space == "latent" else ""
        name = f"{prefix}{self.sampler.label}-{self.sampler.num_steps}"
        if self.sampler.spacing != self.sampler.spacing_for(self.sampler.prediction):
            name += f"-{self.sampler.spacing}"
        return name

    @property
    def sampler_name(self) -> str:
        """The registered name (``ddim``), or ``package.module:Name`` for a plug-in."""
        cls = type(self.sampler)
        return cls.name or f"{cls.__module__}:{cls.__qualname__}"

    @property
    def num_steps(self) -> int:
        return self.sampler.num_steps

    @property
    def prediction(self) -> str:
        """What the network predicts: ``eps``, ``v`` or ``flow``."""
        return self.sampler.prediction

    def plan(self, strength: float) -> Plan:
        """The sampler's :class:`~diffbench.core.plan.Plan` at ``strength`` from this translator's
        start: timesteps, NFE (Heun's are two a step but the last) and start. Every translation
        starts at ``int(strength * T) - 1`` (299 at 0.3 with T = 1000) whatever the sampler and
        step count; a flow system at sigma = strength, its start timestep the VP timestep of the
        same SNR (:meth:`~diffbench.sampling.schedule.NoiseSchedule.timestep_for_snr`)."""
        return self.sampler.plan(strength, self.start)

    def add_noise(self, x0: Tensor, noise: Tensor, t: int) -> Tensor:
        """x0 at VP timestep ``t``; for a flow system the VP input of the same SNR as its own
        (a rescaling of it: the same information)."""
        return self.sampler.schedule.add_noise(x0, noise, t)

    @torch.inference_mode()
    def noised(
        self, x0: Tensor, t: int, generator: torch.Generator | None = None
    ) -> tuple[str, Tensor]:
        """(space, x_t): ``x0`` noised to ``t`` where this system diffuses: pixel x_t, or
        z_t = add_noise(scaled VAE latents, noise, t) (noise drawn by ``generator``)."""
        x = x0.to(self.device)
        if self.vae is not None:
            x = to_latent(self.vae, x, self._encode)
        return self.space, self.add_noise(x, randn_like(x, generator), t)

    def checkpoint_sha256(self) -> dict[str, str]:
        if self._digests is None:
            self._digests = {name: sha256_file(p) for name, p in self._checkpoints.items()}
        return self._digests

    def flops_per_image(self, strength: float) -> int:
        """Forward FLOPs of one translation at ``strength``: the UNet once per evaluation, plus
        the VAE's encode and decode in latent space."""
        steps = self.plan(strength).nfe
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

    @property
    def settings(self) -> dict[str, Any]:
        """What decides this translator's speed and noise, for results rows and bench JSON."""
        return {
            "compile": self.compile or "none",
            "noise_device": self.generator(0).device.type,
            "tf32": self.tf32,
            "channels_last": self.channels_last,
        }

    @property
    def compile_seconds(self) -> float:
        """Seconds spent so far compiling or capturing CUDA graphs (0 in eager mode)."""
        return self._call.compile_seconds if self._call is not None else 0.0

    def generator(self, seed: int) -> torch.Generator:
        """A generator seeded with ``seed`` on this translator's noise device."""
        return noise_generator(seed, self.device, self.noise_device)

    @torch.inference_mode()
    def __call__(
        self, x0: Tensor, strength: float, generator: torch.Generator | None = None
    ) -> Tensor:
        check_digits(x0)
        self.plan(strength)  # a bad strength: an error now
        x0 = x0.to(self.device)
        noise = randn_like(torch.empty((len(x0), *self.noise_shape), device=self.device),
                           generator)
        with tf32_mode(self.tf32) if self.device.type == "cuda" else nullcontext():
            call = self._call or self._translate
            return call(x0, noise, strength, generator)

    def _translate(
        self, x0: Tensor, noise: Tensor, strength: float, generator: torch.Generator | None,
        callback: Callback | None = None,
    ) -> Tensor:
        """One translation from the given initial noise (``generator``: DDPM's later draws)."""
        unet = self._compiled_unet if self._compiled_unet is not None else self.unet
        if self.vae is None:
            x = self.sampler.img2img(unet, x0, strength, noise=noise, generator=generator,
                                     start=self.start, callback=callback)
            return x.clamp(-1, 1)
        z0 = to_latent(self.vae, x0, self._encode)
        z = self.sampler.img2img(unet, z0, strength, noise=noise, generator=generator,
                                 start=self.start, callback=callback)
        return from_latent(self.vae, z, self._decode).clamp(-1, 1)

    @torch.inference_mode()
    def nonfinite_step(
        self, x0: Tensor, strength: float, generator: torch.Generator | None = None
    ) -> int | None:
        """The first sampler step (0-based) whose state or x0 estimate holds NaN or infinity in
        the call ``self(x0, strength, generator)`` makes, rerun eagerly; None when every step
        stays finite (the encoder or decoder is then the culprit)."""
        x0 = x0.to(self.device)
        noise = randn_like(torch.empty((len(x0), *self.noise_shape), device=self.device),
                           generator)
        found: list[int] = []

        def watch(state: dict[str, Any]) -> None:
            if not found and not all(torch.isfinite(state[k]).all() for k in ("x", "x0")):
                found.append(int(state["i"]))

        self._translate(x0, noise, strength, generator, callback=watch)
        return found[0] if found else None

    @torch.inference_mode()
    def generate(self, x_T: Tensor) -> Tensor:
        """Digits sampled from pure noise ``x_T`` (latents in latent space) by every step."""
        x = self.sampler.sample(self.unet, x_T.to(self.device))
        return (x if self.vae is None else from_latent(self.vae, x)).clamp(-1, 1)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The shape of one image in the space the sampler runs in."""
        return tuple(self.vae.latent_shape) if self.vae is not None else IMAGE_SHAPE

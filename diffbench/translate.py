"""Translator: trained checkpoints -> one image-to-image callable, in pixel or latent space.

Pixel space runs the sampler's ``img2img`` on the digits with the pixel UNet's EMA weights.
Latent space (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models") encodes with the VAE (posterior mean times the stored scale factor), runs ``img2img``
on the latents with the latent UNet and decodes. Weights load once, in channels-last layout;
calls run under ``torch.inference_mode`` on the chosen device.

Options, each recorded in :attr:`Translator.settings`: ``compile`` (None, ``"compile"`` or
``"cudagraphs"``: see :mod:`diffbench.compiled`), ``noise_device`` (``"device"``, the default,
or ``"cpu"``: where the generator of :meth:`Translator.generator` draws, see
:mod:`diffbench.runtime`) and ``tf32`` (CUDA only; off by default, so fp32 stays IEEE fp32).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffbench.checkpoints import load_model, require_metadata
from diffbench.compiled import PreparedCall, check_compile, compile_network
from diffbench.errors import InputError
from diffbench.models import flops_per_image
from diffbench.runtime import check_noise_device, check_tf32, noise_generator, tf32_mode
from diffbench.sampling import DDIMSampler, DDPMSampler, Sampler, randn_like
from diffbench.schedule import NoiseSchedule

SPACES = ("pixel", "latent")
SAMPLERS = ("ddpm", "ddim")
IMAGE_SHAPE = (1, 28, 28)


def check_digits(x0: Tensor) -> None:
    """Raise a ValueError unless ``x0`` is a batch of MNIST digits, [B, 1, 28, 28]."""
    if x0.dim() != 4 or tuple(x0.shape[1:]) != IMAGE_SHAPE:
        raise InputError(f"x0 must be [B, 1, 28, 28] in [-1, 1], got shape {tuple(x0.shape)}")


class Translator:
    """``translator(x0, strength, generator=None) -> x``: noise to ``strength``, denoise back."""

    def __init__(
        self,
        unet: torch.nn.Module,
        sampler: Sampler,
        vae: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
        facts: dict[str, Any] | None = None,
        compile: str | None = None,
        noise_device: str = "device",
        tf32: bool = False,
        channels_last: bool = True,
    ) -> None:
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
        self.compile, self.noise_device, self.tf32 = compile, noise_device, tf32
        self.channels_last = channels_last
        network = (lambda fn: compile_network(fn, self.device)) if compile else (lambda fn: fn)
        self._unet = network(self.unet)
        self._encode = network(self.vae.encode) if vae is not None else None
        self._decode = network(self.vae.decode) if vae is not None else None
        self._call = PreparedCall(self._translate, compile, self.device) if compile else None

    @classmethod
    def from_checkpoints(
        cls,
        directory: str | Path = "fixtures/checkpoints",
        space: str = "pixel",
        sampler: str = "ddpm",
        num_steps: int | None = None,
        eta: float = 0.0,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> Translator:
        """Load ``pixel.safetensors`` (or ``latent.safetensors`` + ``vae.safetensors``) from
        ``directory``. ``num_steps=None``: all timesteps for DDPM, 50 for DDIM. ``options``:
        ``compile``, ``noise_device``, ``tf32``, ``channels_last`` (see the class)."""
        if space not in SPACES:
            raise InputError(f"unknown space {space!r}; allowed: {', '.join(SPACES)}")
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if sampler == "ddpm" and eta != 0.0:
            raise InputError(f"eta applies to the DDIM sampler only, got eta={eta!r} with ddpm")
        directory = Path(directory)
        unet, metadata = load_model(directory / f"{space}.safetensors", device)
        require_metadata(directory / f"{space}.safetensors", metadata, "train_seconds", "stats")
        vae, vae_metadata = (None, {})
        if space == "latent":
            vae, vae_metadata = load_model(directory / "vae.safetensors", device)
            require_metadata(directory / "vae.safetensors", vae_metadata, "train_seconds", "stats")
        schedule_config = metadata.get("schedule") or {"name": "linear", "num_timesteps": 1000}
        schedule = NoiseSchedule.from_name(
            schedule_config["name"], schedule_config["num_timesteps"]
        )
        # x0 predictions are clipped to the data range in pixel space only: latents are not
        # bounded to [-1, 1] (diffusers' latent pipelines also run with clip_sample=False).
        clip = space == "pixel"
        chosen: Sampler = (
            DDPMSampler(schedule, num_steps, clip_sample=clip)
            if sampler == "ddpm"
            else DDIMSampler(schedule, 50 if num_steps is None else num_steps, eta=eta,
                             clip_sample=clip)
        )
        facts = {
            "train_seconds": metadata["train_seconds"] + vae_metadata.get("train_seconds", 0.0),
            "unet_parameters": metadata["stats"]["parameters"],
            "vae_parameters": vae_metadata["stats"]["parameters"] if vae is not None else 0,
        }
        return cls(unet, chosen, vae, device, facts, **options)

    @property
    def name(self) -> str:
        """E.g. ``DDIM-50`` (pixel) or ``LDM-DDPM-1000`` (latent)."""
        kind = "DDPM" if isinstance(self.sampler, DDPMSampler) else "DDIM"
        prefix = "LDM-" if self.space == "latent" else ""
        return f"{prefix}{kind}-{self.sampler.num_steps}"

    def flops_per_image(self, strength: float) -> int:
        """Forward FLOPs of one translation at ``strength``: the UNet once per step taken, plus
        the VAE's encode and decode in latent space."""
        steps = len(self.sampler.img2img_timesteps(strength))
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
        self.sampler.img2img_timesteps(strength)  # a bad strength is a ValueError before work
        x0 = x0.to(self.device)
        shape = x0.shape if self.vae is None else (len(x0), *self.vae.latent_shape)
        noise = randn_like(torch.empty(shape, device=self.device), generator)
        with tf32_mode(self.tf32) if self.device.type == "cuda" else nullcontext():
            call = self._call or self._translate
            return call(x0, noise, strength, generator)

    def _translate(
        self, x0: Tensor, noise: Tensor, strength: float, generator: torch.Generator | None
    ) -> Tensor:
        """One translation from the given initial noise (``generator``: DDPM's later draws)."""
        if self.vae is None:
            x = self.sampler.img2img(self._unet, x0, strength, noise=noise, generator=generator)
            return x.clamp(-1, 1)
        scale = self.vae.scale_factor
        z0 = self._encode(x0)[0] * scale
        z = self.sampler.img2img(self._unet, z0, strength, noise=noise, generator=generator)
        return self._decode(z / scale).clamp(-1, 1)

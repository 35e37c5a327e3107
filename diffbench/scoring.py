"""Measuring any :class:`~diffbench.system.System`: fidelity on real digits and latency.

Every system (diffbench's samplers, a user's plug-in, the diffusers peer) is scored by this code
and nothing else: ``diffbench compare``, ``diffbench evaluate`` and the benches call it.
Fidelity compares each output with its own source digit and stands beside the preservation
ceiling at the system's start timestep; latency is the median of timed calls, the device
synchronised before the clock stops, the same digits and seed for every call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.data import load_mnist
from diffbench.metrics import Judge
from diffbench.runtime import timed
from diffbench.system import System, generator_for

REFERENCE_SLICE = slice(5000, 10_000)
"""Test digits whose classifier features are the Frechet distance's reference."""


@dataclass
class Digits:
    """Source digits, their labels, and classifier features of held-out real digits."""

    images: Tensor
    labels: Tensor
    reference_features: Tensor

    def first(self, count: int) -> Digits:
        """The first ``count`` source digits, with the same reference features."""
        return Digits(self.images[:count], self.labels[:count], self.reference_features)


def load_digits(judge: Judge, num_images: int, data_dir: str | None) -> Digits:
    test = load_mnist("test", data_dir)
    return Digits(
        test.images[:num_images],
        test.labels[:num_images],
        judge.features(test.images[REFERENCE_SLICE]),
    )


def start_timestep(system: System, strength: float) -> int:
    """The timestep image-to-image noises to (the first one it denoises from)."""
    return system.start_timestep(strength)


def translate(
    system: System,
    images: Tensor,
    strength: float,
    seed: int,
    batch_size: int = 250,
    progress: bool = False,
) -> Tensor:
    """Translate ``images`` in batches; batch i draws from a generator seeded ``seed + i``, so
    results do not depend on how many batches run before."""
    outputs = []
    batches = images.split(batch_size)
    for i, batch in enumerate(tqdm(batches, desc=system.name, disable=not progress)):
        generator = generator_for(system, seed + i)
        outputs.append(system(batch, strength, generator=generator).cpu())
    return torch.cat(outputs)


def noised_inputs(system: System, images: Tensor, strength: float, seed: int) -> Tensor:
    """x_t at the system's start timestep, in pixel space, with seeded noise."""
    t = system.start_timestep(strength)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return system.add_noise(images, noise, t)


@dataclass
class SystemResult:
    """One system at one strength: what ran and what it scored."""

    name: str
    space: str
    sampler: str
    steps: int
    strength: float
    num_images: int
    start_timestep: int
    mse: float
    psnr: float
    ssim: float
    preservation: float
    preservation_ceiling: float
    frechet_distance: float
    sec_per_image: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def score_system(
    system: System,
    judge: Judge,
    digits: Digits,
    strength: float,
    seed: int,
    progress: bool = False,
) -> tuple[SystemResult, Tensor]:
    """Translate the digits with one system at one strength and score the outputs.

    The preservation ceiling is the noise-aware classifier's accuracy on the digits noised in
    pixel space to the system's start timestep (for latent systems, a pixel-space stand-in for
    the latent noise level at the same timestep).
    """
    start = time.perf_counter()
    outputs = translate(system, digits.images, strength, seed, progress=progress)
    seconds = time.perf_counter() - start
    t = system.start_timestep(strength)
    noised = noised_inputs(system, digits.images, strength, seed)
    timesteps = torch.full((len(noised),), t, dtype=torch.long)
    scores = judge.score(outputs, digits.images, digits.labels, digits.reference_features)
    result = SystemResult(
        name=system.name,
        space=system.space,
        sampler=system.sampler_name,
        steps=system.evaluations(strength),
        strength=strength,
        num_images=len(outputs),
        start_timestep=t,
        preservation_ceiling=judge.preservation_ceiling(noised, timesteps, digits.labels),
        sec_per_image=seconds / len(outputs),
        **scores,
    )
    return result, outputs


def measure_latency(
    system: System, images: Tensor, strength: float, seed: int, repeats: int
) -> dict[str, Any]:
    """Seconds per image of ``repeats`` timed calls on ``images`` (same seed each call); a
    compiled system first prepares this shape and strength in an untimed call."""
    images = images.to(system.device)

    def call() -> Tensor:
        return system(images, strength, generator=generator_for(system, seed))

    if getattr(system, "compile", None):
        call()

    seconds = [timed(call, system.device)[0] / len(images) for _ in range(repeats)]
    return {
        "sec_per_image": statistics.median(seconds),
        "sec_per_image_min": min(seconds),
        "sec_per_image_max": max(seconds),
        "timing_repeats": repeats,
        "timing_batch": len(images),
    }

"""Measuring any :class:`~diffbench.core.system.System`: fidelity on real digits and latency.

Every system (diffbench's samplers, a user's plug-in, the diffusers peer) is scored by this code
and nothing else: ``diffbench compare``, ``diffbench evaluate`` and the benches call it.
Fidelity compares each output with its own source digit, each figure with its 95% interval
(:mod:`diffbench.measure.stats`), and stands beside the noised accuracy at the system's start
timestep (its own space's noise-aware classifier on x_t: how much identity survived the noise).

Latency is timed the same way for every system: the digits moved to the device and the
generators made (on the device, by default) before any clock starts; ``warmup`` untimed calls,
then ``repeats`` timed ones, the device synchronised before the clock starts and stops; median,
p50/p90/p99, min and max per image; then the peak memory of one more, untimed call
(:mod:`diffbench.measure.memory`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffbench.core.choices import MAX_SCORED_DIGITS
from diffbench.core.runtime import timed
from diffbench.core.system import System, generator_for, noised
from diffbench.io.checkpoints import load_model
from diffbench.io.data import load_mnist
from diffbench.measure.feature_distance import FeatureReference
from diffbench.measure.memory import peak_memory
from diffbench.measure.metrics import Judge, mse_per_image
from diffbench.measure.stats import bootstrap_mean_interval, percentiles, share_interval
from diffbench.results.row import make_row

REFERENCE_SLICE = slice(MAX_SCORED_DIGITS, 10_000)
"""Test digits whose classifier features are the Frechet distance's and KID's reference."""


class NonFiniteOutput(Exception):
    """A system's output holds NaN or infinity: it stops that system (the CLI exits 1)."""

    exit_status = 1

    def __init__(self, name: str, strength: float, digits: list[int], step: int | None) -> None:
        self.name, self.strength, self.digits, self.step = name, strength, digits, step
        where = "its output" if step is None else f"sampler step {step}"
        shown = ", ".join(map(str, digits[:8])) + (", ..." if len(digits) > 8 else "")
        super().__init__(f"{name} at strength {strength:g}: non-finite values from {where} on "
                         f"{len(digits)} digit(s) ({shown})")

    def fields(self) -> dict[str, Any]:
        """The failure as row fields (:class:`~diffbench.results.row.ResultRow`)."""
        return {"failure": "non-finite output", "failure_step": self.step,
                "failure_digits": self.digits}


@dataclass
class Digits:
    """Source digits, their labels, and the fitted features of held-out real digits (the
    reference of the Frechet distance and KID)."""

    images: Tensor
    labels: Tensor
    reference: FeatureReference | None

    def first(self, count: int) -> Digits:
        """The first ``count`` source digits, with the same reference."""
        return Digits(self.images[:count], self.labels[:count], self.reference)


def load_digits(judge: Judge, num_images: int, data_dir: str | None) -> Digits:
    test = load_mnist("test", data_dir)
    return Digits(
        test.images[:num_images],
        test.labels[:num_images],
        FeatureReference(judge.features(test.images[REFERENCE_SLICE])),
    )


def translate(
    system: System,
    images: Tensor,
    strength: float,
    seed: int,
    batch_size: int = 250,
    progress: bool = False,
) -> Tensor:
    """Translate ``images`` in batches; batch i draws from a generator seeded ``seed + i``, so
    results do not depend on how many batches run before. The first batch with a non-finite
    output raises :class:`NonFiniteOutput` naming its digits and, when the system can say
    (``nonfinite_step``), the first sampler step that went non-finite."""
    outputs = []
    batches = images.split(batch_size)
    for i, batch in enumerate(tqdm(batches, desc=system.name, disable=not progress)):
        generator = generator_for(system, seed + i)
        output = system(batch, strength, generator=generator).cpu()
        bad = ~torch.isfinite(output.flatten(1)).all(1)
        if bad.any():
            trace = getattr(system, "nonfinite_step", None)
            step = trace(batch, strength, generator_for(system, seed + i)) if trace else None
            digits = (bad.nonzero().flatten() + i * batch_size).tolist()
            raise NonFiniteOutput(system.name, strength, digits, step)
        outputs.append(output)
    return torch.cat(outputs)


def noised_inputs(system: System, images: Tensor, strength: float, seed: int) -> Tensor:
    """x_t at the system's start timestep, in pixel space, with seeded noise (for pictures)."""
    t = system.plan(strength).start_timestep
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return system.add_noise(images, noise, t)


def noised_accuracy(
    system: System, judge: Judge, digits: Digits, t: int, seed: int
) -> dict[str, Any]:
    """The noise-aware classifier's accuracy on the digits noised to ``t`` in the system's own
    space (noise from a CPU generator seeded ``seed``), with its Wilson interval; NaN when that
    space's classifier is absent. ``noised_space`` names the space measured."""
    space, x_t = noised(system, digits.images, t, torch.Generator().manual_seed(seed))
    timesteps = torch.full((len(x_t),), t, dtype=torch.long)
    flags = judge.noised_correct(x_t, timesteps, digits.labels, space)
    if flags is None:
        return {"noised_accuracy": float("nan"), "noised_accuracy_ci95": [float("nan")] * 2,
                "noised_space": space}
    return {"noised_accuracy": float(flags.float().mean()),
            "noised_accuracy_ci95": share_interval(flags), "noised_space": space}


def score_system(
    system: System,
    judge: Judge,
    digits: Digits,
    strength: float,
    seed: int,
    progress: bool = False,
) -> tuple[dict[str, Any], Tensor, dict[str, Tensor]]:
    """Translate the digits with one system at one strength and score the outputs, beside the
    noised accuracy at its start timestep in its own space; intervals drawn from a generator
    seeded ``seed``. The row (:func:`diffbench.results.row.make_row`), the outputs, and their
    per-digit
    values (:meth:`~diffbench.measure.metrics.Judge.measure`, for pairing rows)."""
    start = time.perf_counter()
    outputs = translate(system, digits.images, strength, seed, progress=progress)
    seconds = time.perf_counter() - start
    scores, per_digit = judge.measure(outputs, digits.images, digits.labels, digits.reference,
                                      generator=torch.Generator().manual_seed(seed))
    t = system.plan(strength).start_timestep
    row = make_row(
        **what_ran(system, strength, len(outputs)),
        **scores,
        **noised_accuracy(system, judge, digits, t, seed),
        scoring_sec_per_image=seconds / len(outputs),
    )
    return row, outputs, per_digit


def what_ran(system: System, strength: float, num_images: int) -> dict[str, Any]:
    """A row's fields that say what ran: the system, its sampler and plan, the digits."""
    plan = system.plan(strength)
    return {"name": system.name, "space": system.space,
            "prediction": getattr(system, "prediction", "eps"), "sampler": system.sampler_name,
            "steps": system.num_steps, "nfe": plan.nfe, "strength": strength,
            "start_timestep": plan.start_timestep, "start_sigma": plan.start_sigma,
            "start_snr": plan.start_snr, "num_images": num_images}


def measure_latency(
    system: System,
    images: Tensor,
    strength: float,
    seed: int,
    repeats: int,
    warmup: int = 1,
    memory: bool = True,
) -> dict[str, Any]:
    """Seconds per image of ``repeats`` timed calls on ``images`` after ``warmup`` untimed ones
    (at least one for a compiled system, which prepares this shape and strength then), the same
    seed each call; median, p50/p90/p99, min and max; and (``memory``) the peak memory of one
    more call. Inputs and generators are ready on the device before any clock starts."""
    images = images.to(system.device)
    warmup = max(warmup, 1) if getattr(system, "compile", None) else warmup
    generators = [generator_for(system, seed) for _ in range(warmup + repeats + 1)]

    def call(generator: torch.Generator) -> Tensor:
        return system(images, strength, generator=generator)

    for generator in generators[:warmup]:
        call(generator)
    seconds = [timed(lambda g=g: call(g), system.device)[0] / len(images)
               for g in generators[warmup:warmup + repeats]]
    spread = percentiles(seconds)
    result = {
        "sec_per_image": statistics.median(seconds),
        "sec_per_image_min": min(seconds),
        "sec_per_image_max": max(seconds),
        **{f"sec_per_image_p{q}": value for q, value in spread.items()},
        "timing_repeats": repeats,
        "timing_warmup": warmup,
        "timing_batch": len(images),
    }
    if memory:
        result.update(peak_memory(lambda: call(generators[-1]), system.device))
    return result


LATENT_MAX_PRESERVATION_GAP = 0.03
LATENT_MAX_MSE_RATIO = 1.5
"""The latent system against pixel DDIM-50 at the same strength: its preservation at most 3
points lower and its MSE at most 1.5x (its speed is measured by ``diffbench shapes`` and the
benches)."""


def accuracy(judge: Judge, images: Tensor, labels: Tensor) -> dict[str, Any]:
    """The classifier's share of ``labels`` read, with its Wilson interval."""
    correct = judge.correct(images, labels)
    return {"value": float(correct.float().mean()), "ci95": share_interval(correct)}


@torch.inference_mode()
def vae_reconstruction(
    checkpoints: Path, judge: Judge, images: Tensor, labels: Tensor, seed: int = 0
) -> dict:
    vae, _ = load_model(checkpoints / "vae.safetensors", judge.device)
    reconstructions = torch.cat(
        [vae.decode(vae.encode(b.to(judge.device))[0]).cpu() for b in images.split(500)]
    )
    errors = mse_per_image(reconstructions, images)
    preserved = accuracy(judge, reconstructions, labels)
    return {
        "num_images": len(images),
        "reconstruction_mse": float(errors.mean()),
        "reconstruction_mse_ci95": bootstrap_mean_interval(
            errors, torch.Generator().manual_seed(seed)),
        "preservation": preserved["value"],
        "preservation_ci95": preserved["ci95"],
    }

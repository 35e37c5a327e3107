"""What the benchmarks share besides the diffbench plugin's fixtures (``diffbench_env``:
checkpoints, digits, classifiers, systems, the fidelity gate; diffbench.bench.plugin): devices,
batch sizes, and timing helpers (synchronised calls, side-by-side ratios, reports)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import pytest
import torch

from diffbench.core.system import System, generator_for
from diffbench.measure import paired
from diffbench.measure.memory import peak_memory
from diffbench.measure.stats import percentiles

MATCHED_IMAGES = 512  # digits behind a "matched fidelity" claim (one digit: 0.2 points)
SCORED_IMAGES = 256  # digits scored where a ratio compares preservation (one digit: 0.4 points)
STRENGTH = 0.3  # the ratio benches' image-to-image strength and batch
BATCH = 64
WARMUP = 1  # untimed calls before the timed rounds, for every system alike
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=[CUDA, pytest.mark.cuda])]


def synchronized(fn, device: str):
    """``fn`` followed by a device sync, so the clock stops when the GPU is done."""
    if device != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def median_seconds(fn, device: str, repeats: int = 5) -> float:
    """Median wall seconds of ``fn`` (synchronised), after one warm-up call."""
    call = synchronized(fn, device)
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def pedantic_call(system: System, images, strength: float, device: str):
    """(target, setup) for ``benchmark.pedantic``: ``setup`` (untimed) makes a fresh generator
    seeded 0, as :func:`diffbench.measure.scoring.measure_latency` does before its clock starts;
    ``target`` calls the system on ``images`` (already on the device) and syncs the device."""

    def setup():
        return (), {"generator": generator_for(system, 0)}

    return synchronized_call(lambda generator: system(images, strength, generator=generator),
                             device), setup


def synchronized_call(fn, device: str):
    """``synchronized`` for a function of keyword arguments."""
    if device != "cuda":
        return fn

    def call(**kwargs):
        out = fn(**kwargs)
        torch.cuda.synchronize()
        return out

    return call


@dataclass
class SideBySide:
    """Two systems' seconds per image, from calls alternated in pairs: ``ratio`` is the median
    over pairs of ``other / timed`` (a speed-up of ``timed`` when above 1) with its 95%
    order-statistic interval (:func:`diffbench.measure.paired.median_interval`)."""

    timed_s: float
    other_s: float
    ratio: float
    ratio_ci95: list[float]
    pairs: int
    spread: dict[str, dict[int, float]]


def side_by_side(benchmark, diffbench_env, device, timed, other, rounds, seed=0,
                 strength=STRENGTH) -> SideBySide:
    """Seconds per image of ``timed`` (the benchmark itself) and ``other`` on the same ``BATCH``
    digits at ``strength`` (default ``STRENGTH``), their calls alternated: each round
    (``WARMUP`` untimed ones first)
    calls both, in an order drawn from ``random.Random(seed)``, so drift between rounds falls on
    both alike. Each is treated alike: the digits moved to the device once, before any clock;
    a fresh generator seeded 0 made outside the clock; the device synchronised before the clock
    stops. The ratio needs at least 6 rounds for its 95% interval."""
    images = diffbench_env.digits(device).images[:BATCH].to(device)
    benchmark.group = "ratios"
    target, setup_timed = pedantic_call(timed, images, strength, device)
    other_call = synchronized_call(
        lambda generator: other(images, strength, generator=generator), device)
    order, other_first, other_seconds = random.Random(seed), [], []

    def time_other():
        generator = generator_for(other, 0)
        start = time.perf_counter()
        other_call(generator=generator)
        other_seconds.append(time.perf_counter() - start)

    def setup():
        other_first.append(order.random() < 0.5)
        if other_first[-1]:
            time_other()
        return setup_timed()

    def teardown(**_):
        if not other_first[-1]:
            time_other()

    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=rounds,
                       warmup_rounds=WARMUP, iterations=1)
    timed_seconds = list(benchmark.stats.stats.data)
    other_seconds = other_seconds[WARMUP:]
    ratios = paired.log_ratios(other_seconds, timed_seconds)
    lo, hi = paired.median_interval(ratios, level=0.95)
    per_image = {"timed": timed_seconds, "other": other_seconds}
    spread = {k: {q: v / len(images) for q, v in percentiles(times).items()}
              for k, times in per_image.items()}
    result = SideBySide(paired.median(timed_seconds) / len(images),
                        paired.median(other_seconds) / len(images),
                        math.exp(paired.median(ratios)), [math.exp(lo), math.exp(hi)],
                        len(ratios), spread)
    benchmark.extra_info.update(ratio=result.ratio, ratio_ci95=result.ratio_ci95,
                                pairs=result.pairs)
    return result


def latency_info(benchmark, batch: int) -> dict[str, float]:
    """Seconds per image at the 50th, 90th and 99th percentiles of the benchmark's rounds."""
    return {f"sec_per_image_p{q}": v / batch
            for q, v in percentiles(benchmark.stats.stats.data).items()}


def memory_info(system: System, images, strength: float, device: str) -> dict:
    """The peak memory of one more, untimed call (see :mod:`diffbench.measure.memory`)."""
    return peak_memory(lambda: system(images, strength, generator=generator_for(system, 0)),
                       device)


def report(benchmark, title: str, numbers: dict[str, float]) -> None:
    """Record ``numbers`` in the benchmark's extra_info and print them under ``title``."""
    benchmark.extra_info.update(numbers)
    lines = [f"{title}:"]
    for key, value in numbers.items():
        if key.endswith(("_ci95_lo", "_ci95_hi")):
            continue  # printed beside their ratio
        line = f"    {key} = {value:.4g}"
        if f"{key}_ci95_lo" in numbers:
            line += f" [{numbers[key + '_ci95_lo']:.4g}, {numbers[key + '_ci95_hi']:.4g}] (95%)"
        lines.append(line)
    print("\n" + "\n".join(lines))

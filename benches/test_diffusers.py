"""The cost of driving a diffusers scheduler through diffbench's adapter
(``sampler: "diffusers:DDIMScheduler"``, :mod:`diffbench.sampling.diffusers_adapter`) against
diffbench's own DDIM, the same network, digits, strength and step count (docs/diffusers.md).

1. Each of pixel DDIM-50 and DDIMScheduler-50 timed alone (batch 16, strength 0.3: 15 steps).
2. The two side by side: calls alternated in pairs in a seeded random order, a fresh generator
   per call made outside the clock, as ``benchlib.side_by_side`` treats its pairs (which runs at
   its fixed batch of 64); reported: the median paired ratio adapter / built-in with its 95%
   order-statistic interval, and the adapter's overhead per step in ms (the median paired time
   difference over the plan's steps). Reported, not asserted.
"""

from __future__ import annotations

import math
import random
import time

import pytest

from benchlib import DEVICES, STRENGTH, generator_for, pedantic_call, report, synchronized_call
from diffbench.measure import paired

NEEDS = "the adapter needs diffusers: pip install diffbench[parity]"
pytest.importorskip("diffusers", reason=NEEDS)

SAMPLERS = {"DDIM-50": "ddim", "DDIMScheduler-50": "diffusers:DDIMScheduler"}
DIFFUSERS_BATCH = 16
PAIRS = 8  # alternated pairs of calls: enough for the median's 95% interval (6 at least)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SAMPLERS)
def test_ddim_alone(benchmark, bench_env, device, name):
    system = bench_env.translator("pixel", SAMPLERS[name], 50, device)
    images = bench_env.digits(device).images[:DIFFUSERS_BATCH].to(device)
    target, setup = pedantic_call(system, images, STRENGTH, device)
    benchmark.group = "diffusers adapter"
    benchmark.pedantic(target, setup=setup, rounds=3, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("device", DEVICES)
def test_adapter_against_built_in_ddim(benchmark, bench_env, device):
    adapter = bench_env.translator("pixel", SAMPLERS["DDIMScheduler-50"], 50, device)
    ddim = bench_env.translator("pixel", SAMPLERS["DDIM-50"], 50, device)
    images = bench_env.digits(device).images[:DIFFUSERS_BATCH].to(device)
    calls = {system: synchronized_call(
        lambda generator, system=system: system(images, STRENGTH, generator=generator), device)
        for system in (adapter, ddim)}
    seconds: dict = {adapter: [], ddim: []}
    order = random.Random(0)

    def alternated_pair():
        pair = [adapter, ddim] if order.random() < 0.5 else [ddim, adapter]
        for system in pair:
            generator = generator_for(system, 0)
            start = time.perf_counter()
            calls[system](generator=generator)
            seconds[system].append(time.perf_counter() - start)

    benchmark.group = "diffusers adapter"
    benchmark.pedantic(alternated_pair, rounds=PAIRS, warmup_rounds=1, iterations=1)
    timed = {system: times[1:] for system, times in seconds.items()}  # less the warm-up pair
    ratios = paired.log_ratios(timed[adapter], timed[ddim])
    lo, hi = paired.median_interval(ratios, level=0.95)
    steps = adapter.plan(STRENGTH).steps
    differences = [(a - b) / steps * 1e3 for a, b in zip(timed[adapter], timed[ddim])]
    report(benchmark, f"DDIMScheduler-50 (adapter) vs DDIM-50, batch {DIFFUSERS_BATCH}, "
           f"{steps} steps", {
               "adapter_sec_per_call": paired.median(timed[adapter]),
               "ddim_sec_per_call": paired.median(timed[ddim]),
               "ratio": math.exp(paired.median(ratios)),
               "ratio_ci95_lo": math.exp(lo), "ratio_ci95_hi": math.exp(hi),
               "overhead_ms_per_step": paired.median(differences), "pairs": len(ratios)})

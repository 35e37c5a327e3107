"""Speed ratios measured side by side in one run, on the same digits (absolute times on shared
machines are noise; ratios much less so). Each is reported with the numbers behind it, in
``extra_info`` and on the terminal; the goals are reported, not asserted.

Both systems of a ratio are treated alike (``benchlib.side_by_side``): the same digits on the
device before any clock, the same warm-up call, the same number of timed rounds (DDPM-1000's
included), a fresh generator per call made outside the clock, and their calls alternated in
pairs, in a seeded random order, so that drift falls on both. Each speed-up is the median of the
paired ratios with its 95% interval (``speedup_ci95``).

1. DDIM-50 against DDPM-1000 (pixel): speed-up per image and the MSE ratio.
2. LDM-DDIM-50 (VAE encode and decode included) against pixel DDIM-50, and the preservation gap
   (on 256 digits, where one digit is 0.4 points).
3. Sampling overhead: DDIM-50's time outside the network's forward passes (unclamped, with its
   95% interval over alternating rounds); the UNet's achieved FLOP rate against the best fp32
   matmul rate of sizes 2048-4096 on this machine, with its interval.
5. The best few-step system of the NFE sweep (DPM++2M-10: 3 network evaluations at 0.3)
   against DDIM-50 (15), at matched fidelity (MSE and preservation on 512 digits).
6. The one-step networks (consistency, MeanFlow; docs/one_step.md) at 1, 2 and 4 network
   evaluations against DDIM-50 (15 / 25), at strengths 0.3 and 0.5 (goal: >= 10x images/s).
4. Batch-1 DDIM-50 (pixel and latent) compiled against eager: ``torch.compile`` and, on CUDA,
   one CUDA graph per call (goal: >= 3x eager on a GPU); the compile or capture seconds apart;
   and eager with contiguous weights against the default channels-last ones.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from benchlib import (
    BATCH,
    DEVICES,
    MATCHED_IMAGES,
    SCORED_IMAGES,
    STRENGTH,
    SideBySide,
    median_seconds,
    report,
    side_by_side,
    synchronized,
)
from diffbench.io.config import SystemConfig
from diffbench.measure.paired import median_interval

OVERHEAD_ROUNDS = 9  # the fewest whose median has a 95% order-statistic interval, plus three
MATMUL_SIZES = (2048, 3072, 4096)


def speedup(pair: SideBySide) -> dict[str, float]:
    """The speed-up of the benchmark's own system and its 95% interval's ends."""
    return {"speedup": pair.ratio, "speedup_ci95_lo": pair.ratio_ci95[0],
            "speedup_ci95_hi": pair.ratio_ci95[1], "pairs": pair.pairs}


@pytest.mark.parametrize("device", DEVICES)
def test_ddim_against_ddpm(benchmark, diffbench_env, device):
    ddim = diffbench_env.translator("pixel", "ddim", 50, device)
    ddpm = diffbench_env.translator("pixel", "ddpm", 1000, device)
    pair = side_by_side(benchmark, diffbench_env, device, ddim, ddpm, 6)
    ddim_mse = diffbench_env.fidelity(ddim, STRENGTH, device)["mse"]
    ddpm_mse = diffbench_env.fidelity(ddpm, STRENGTH, device)["mse"]
    report(benchmark, "DDIM-50 vs DDPM-1000 (goal: >= 18x faster, mse within 10%)", {
        "ddim_sec_per_image": pair.timed_s, "ddpm_sec_per_image": pair.other_s,
        "ddim_sec_per_image_p90": pair.spread["timed"][90],
        "ddpm_sec_per_image_p90": pair.spread["other"][90],
        **speedup(pair), "ddim_mse": ddim_mse, "ddpm_mse": ddpm_mse,
        "mse_ratio": ddim_mse / ddpm_mse,
    })


@pytest.mark.parametrize("device", DEVICES)
def test_latent_against_pixel(benchmark, diffbench_env, device):
    latent = diffbench_env.translator("latent", "ddim", 50, device)
    pixel = diffbench_env.translator("pixel", "ddim", 50, device)
    pair = side_by_side(benchmark, diffbench_env, device, latent, pixel, 10)
    latent_p = diffbench_env.fidelity(latent, STRENGTH, device, SCORED_IMAGES)["preservation"]
    pixel_p = diffbench_env.fidelity(pixel, STRENGTH, device, SCORED_IMAGES)["preservation"]
    report(benchmark, "LDM-DDIM-50 vs pixel DDIM-50 (goal: >= 4x faster, <= 2 points lower)", {
        "latent_sec_per_image": pair.timed_s, "pixel_sec_per_image": pair.other_s,
        "latent_sec_per_image_p90": pair.spread["timed"][90],
        "pixel_sec_per_image_p90": pair.spread["other"][90],
        **speedup(pair), "latent_preservation": latent_p,
        "pixel_preservation": pixel_p, "preservation_gap_points": 100 * (pixel_p - latent_p),
    })


@pytest.mark.parametrize("device", DEVICES)
def test_few_step_against_ddim(benchmark, diffbench_env, device):
    few = diffbench_env.translator("pixel", "dpmsolver++", 10, device)
    ddim = diffbench_env.translator("pixel", "ddim", 50, device)
    pair = side_by_side(benchmark, diffbench_env, device, few, ddim, 10)
    few_f = diffbench_env.fidelity(few, STRENGTH, device, MATCHED_IMAGES)
    ddim_f = diffbench_env.fidelity(ddim, STRENGTH, device, MATCHED_IMAGES)
    report(benchmark, "DPM++2M-10 vs DDIM-50 (goal: >= 2x images/s, mse <= DDIM-50's + 5%, "
                      "preservation >= DDIM-50's - 1 point, on 512 digits)", {
        "few_step_sec_per_image": pair.timed_s, "ddim_sec_per_image": pair.other_s,
        "few_step_sec_per_image_p90": pair.spread["timed"][90],
        "ddim_sec_per_image_p90": pair.spread["other"][90],
        **speedup(pair), "few_step_nfe": few.plan(STRENGTH).nfe,
        "ddim_nfe": ddim.plan(STRENGTH).nfe,
        "few_step_mse": few_f["mse"], "ddim_mse": ddim_f["mse"],
        "mse_ratio": few_f["mse"] / ddim_f["mse"],
        "few_step_preservation": few_f["preservation"],
        "ddim_preservation": ddim_f["preservation"],
        "preservation_gap_points": 100 * (ddim_f["preservation"] - few_f["preservation"]),
        "digits": MATCHED_IMAGES,
    })


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_overhead_and_network_efficiency(benchmark, diffbench_env, device):
    translator = diffbench_env.translator("pixel", "ddim", 50, device)
    images = diffbench_env.digits(device).images[:BATCH].to(device)
    timesteps = translator.plan(STRENGTH).timesteps.tolist()
    t_batches = [torch.full((len(images),), t, device=device) for t in timesteps]

    @torch.inference_mode()
    def forwards_only():
        for t in t_batches:
            translator.unet(images, t)

    # The whole call (the benchmark) and the forwards alone alternate, one of each per round,
    # so each round's overhead share 1 - network / total pairs two neighbouring measurements.
    network_seconds = []
    timed_network = synchronized(forwards_only, device)

    def after_each_round(**_):
        start = time.perf_counter()
        timed_network()
        network_seconds.append(time.perf_counter() - start)

    benchmark.group = "ratios"
    benchmark.pedantic(synchronized(lambda: translator(images, STRENGTH), device),
                       teardown=after_each_round, rounds=OVERHEAD_ROUNDS, warmup_rounds=1,
                       iterations=1)
    totals = benchmark.stats.stats.data
    shares = [1 - n / t for n, t in zip(network_seconds[-len(totals):], totals, strict=True)]
    network = statistics.median(network_seconds[-len(totals):])
    peak, peak_size = best_matmul_rate(device)
    flops = translator.flops_per_image(STRENGTH) * len(images)
    unet_shares = [flops / n / peak for n in network_seconds[-len(totals):]]
    report(benchmark, "DDIM-50 overhead (goal <= 5%) and UNet efficiency (goal >= 30%)", {
        "total_seconds": benchmark.stats.stats.median, "network_seconds": network,
        # unclamped: a negative share says the forwards alone ran slower than the whole call
        "overhead_share": statistics.median(shares),
        **interval("overhead_share", shares),
        "matmul_gflops": peak / 1e9, "matmul_size": peak_size, "unet_gflops": flops / network / 1e9,
        "unet_share_of_matmul": statistics.median(unet_shares),
        **interval("unet_share_of_matmul", unet_shares),
    })


def best_matmul_rate(device: str) -> tuple[float, int]:
    """The best FLOP rate of square fp32 matmuls of sizes 2048-4096 on ``device`` (median of a
    few calls each), and its size: the denominator of the UNet's efficiency. A 1024 matmul is
    far from peak on a CPU, so a UNet could read above 100% of it."""
    best = (0.0, 0)
    for size in MATMUL_SIZES:
        a = torch.randn(size, size, device=device)
        rate = 2 * size**3 / median_seconds(lambda a=a: a @ a, device, repeats=3)
        best = max(best, (rate, size))
    return best


def interval(name: str, values: list[float]) -> dict[str, float]:
    """The 95% order-statistic interval of the median of ``values`` (sign test)."""
    lo, hi = median_interval(values, level=0.95)
    return {f"{name}_ci95_lo": lo, f"{name}_ci95_hi": hi}


@pytest.mark.parametrize("space", ["pixel", "latent"])
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_against_eager(benchmark, diffbench_env, device, space):
    eager = diffbench_env.translator(space, "ddim", 50, device)
    image = diffbench_env.digits(device).images[:1].to(device)

    def call(translator):
        return lambda: translator(image, STRENGTH, generator=translator.generator(0))

    benchmark.group = "compiled"
    benchmark.pedantic(synchronized(call(eager), device), rounds=10, warmup_rounds=1,
                       iterations=1)
    eager_s = benchmark.stats.stats.median
    expected = call(eager)()
    numbers = {"eager_call_seconds": eager_s}
    modes = ["compile", "cudagraphs"] if device == "cuda" else ["compile"]
    for mode in modes:
        fast = diffbench_env.translator(space, "ddim", 50, device, compile=mode)
        seconds = median_seconds(call(fast), device, repeats=10)  # its warm-up call compiles
        numbers.update({
            f"{mode}_call_seconds": seconds,
            f"{mode}_speedup": eager_s / seconds,
            f"{mode}_warmup_seconds": fast.compile_seconds,  # compile or capture, untimed
            f"{mode}_max_abs_difference": float((call(fast)() - expected).abs().max()),
        })
    contiguous = diffbench_env.translator(space, "ddim", 50, device, channels_last=False)
    numbers["contiguous_call_seconds"] = median_seconds(call(contiguous), device, repeats=10)
    numbers["channels_last_speedup"] = numbers["contiguous_call_seconds"] / eager_s
    report(benchmark, f"batch-1 {eager.name} compiled vs eager (goal on a GPU: >= 3x)", numbers)


ONE_STEP = [(sampler, steps) for sampler in ("consistency", "meanflow") for steps in (1, 2, 4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("space", ["pixel", "latent"])
@pytest.mark.parametrize("strength", [0.3, 0.5])
@pytest.mark.parametrize("sampler,steps", ONE_STEP)
def test_one_step_against_ddim(benchmark, diffbench_env, device, space, strength, sampler, steps):
    jump = diffbench_env.system(SystemConfig(space=space, sampler=sampler, steps=steps,
                                         prediction=sampler), device)
    ddim = diffbench_env.translator(space, "ddim", 50, device)
    pair = side_by_side(benchmark, diffbench_env, device, jump, ddim, 10, strength=strength)
    report(benchmark, f"{jump.name} vs {ddim.name} at strength {strength} (goal: >= 10x "
                      f"images/s)", {
        "one_step_sec_per_image": pair.timed_s, "ddim_sec_per_image": pair.other_s,
        **speedup(pair), "one_step_nfe": jump.plan(strength).nfe,
        "ddim_nfe": ddim.plan(strength).nfe, "strength": strength,
    })

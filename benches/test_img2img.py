"""Image-to-image latency and fidelity per system, strength, batch size and device.

Every case records in ``benchmark.extra_info`` what it measured besides time: fidelity on the
fixed digits (mse, psnr, ssim, preservation, preservation_ceiling), steps, strength, batch,
device, parameters and FLOPs per image; the fidelity gate then compares it with the baseline.
"""

from __future__ import annotations

import pytest

from benchlib import DEVICES, synchronized

# (space, sampler, steps): DDPM-1000, DDIM at 10/20/50/100, LDM-DDIM-50, LDM-DDPM-1000.
SYSTEMS = [
    ("pixel", "ddpm", 1000),
    ("pixel", "ddim", 10),
    ("pixel", "ddim", 20),
    ("pixel", "ddim", 50),
    ("pixel", "ddim", 100),
    ("latent", "ddim", 50),
    ("latent", "ddpm", 1000),
]
STRENGTHS = [0.3, 0.5]
BATCHES = [1, 16]  # latency, throughput
QUICK = {("pixel", "ddim", 10), ("pixel", "ddim", 50), ("latent", "ddim", 50)}


def cases():
    for space, sampler, steps in SYSTEMS:
        for strength in STRENGTHS:
            for batch in BATCHES:
                quick = (space, sampler, steps) in QUICK and strength == 0.3
                yield pytest.param(
                    space, sampler, steps, strength, batch,
                    id=f"{space}-{sampler}-{steps}-s{strength}-b{batch}",
                    marks=[pytest.mark.quick] if quick else [],
                )


def rounds_for(steps_run: int, batch: int) -> int:
    """Fewer rounds for the slowest cases, so the full suite stays within minutes."""
    work = steps_run * batch
    return 2 if work >= 2000 else 3 if work >= 200 else 10


@pytest.mark.parametrize("space, sampler, steps, strength, batch", list(cases()))
@pytest.mark.parametrize("device", DEVICES)
def test_img2img(benchmark, bench_env, device, space, sampler, steps, strength, batch):
    translator = bench_env.translator(space, sampler, steps, device)
    images = bench_env.digits(device).images[:batch].to(device)
    steps_run = len(translator.sampler.img2img_timesteps(strength))

    def translate():
        return translator(images, strength, generator=translator.generator(0))

    run = synchronized(translate, device)
    benchmark.group = f"img2img {space}-{sampler} b{batch}"
    benchmark.pedantic(run, rounds=rounds_for(steps_run, batch), warmup_rounds=1, iterations=1)
    fidelity = bench_env.fidelity(translator, strength, device)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        fidelity,
        steps=steps_run,
        sampler_steps=steps,
        strength=strength,
        batch=batch,
        device=device,
        sec_per_image=median / batch,
        images_per_second=batch / median,
        parameters=translator.facts["unet_parameters"] + translator.facts["vae_parameters"],
        flops_per_image=translator.flops_per_image(strength),
        **translator.settings,
    )
    case = f"{space}-{sampler}-{steps}-s{strength}"
    bench_env.profile(f"img2img-{device}-{case}-b{batch}", translate)
    problems = bench_env.gate(f"{device}-{case}", fidelity, device)
    assert not problems, "fidelity regression: " + "; ".join(problems)

"""Image-to-image latency and fidelity per system, strength, batch size and device.

The systems are every registered sampler in each space at the step counts of
:mod:`diffbench.gate.cases` (the cases ``diffbench ab`` times too), plus any given with
``--diffbench-system`` (e.g. a plug-in ``package.module:Name`` sampler).
Every case records in ``benchmark.extra_info`` what it measured besides time: fidelity on the
fixed digits (mse, psnr, ssim, preservation, noised_accuracy, frechet_distance, kid, each with
its ``_ci95`` interval), latency percentiles (``sec_per_image_p50/p90/p99``), the peak memory of
one untimed call (``peak_memory_bytes``, ``peak_memory_method``), steps, strength, batch, device,
parameters and FLOPs per image; the fidelity gate then compares it with the baseline.
"""

from __future__ import annotations

import pytest
import yaml

from benchlib import DEVICES, WARMUP, latency_info, memory_info, pedantic_call
from diffbench.core.system import SPACES, generator_for
from diffbench.gate.cases import BATCHES, QUICK, STRENGTHS, img2img_name, img2img_systems
from diffbench.io.config import SystemConfig, validate
from diffbench.results.row import make_row, settings_fields
from diffbench.sampling import SAMPLERS


def systems(extra: list[str]) -> list[tuple[str, dict]]:
    """(case name, system as a config mapping, so the benchmark JSON can hold it): each space
    with each registered sampler at the step counts of :mod:`diffbench.gate.cases`, then the
    ``--diffbench-system``s."""
    found = [(f"{s['space']}-{s['sampler']}-{s['steps']}", s)
             for s in img2img_systems(SAMPLERS, tuple(SPACES))]
    for text in extra:
        system = validate(SystemConfig, yaml.safe_load(text))
        found.append((system.name or f"{system.space}-{system.sampler}",
                      system.model_dump(exclude_none=True)))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cases = [
        pytest.param(case, system, strength, batch, id=f"{case}-s{strength}-b{batch}",
                     marks=[pytest.mark.quick] if img2img_name(system, strength, batch) in QUICK
                     else [])
        for case, system in systems(metafunc.config.getoption("--diffbench-system"))
        for strength in STRENGTHS
        for batch in BATCHES
    ]
    metafunc.parametrize("device", DEVICES)
    metafunc.parametrize("case, system, strength, batch", cases)


def rounds_for(steps_run: int, batch: int) -> int:
    """Fewer rounds for the slowest cases, so the full suite stays within minutes."""
    work = steps_run * batch
    return 2 if work >= 2000 else 3 if work >= 200 else 10


def test_img2img(benchmark, diffbench_env, diffbench_fidelity, device, case, system, strength,
                 batch):
    translator = diffbench_env.system(system, device)
    images = diffbench_env.digits(device).images[:batch].to(device)
    plan = translator.plan(strength)
    steps_run = plan.nfe

    def translate():
        return translator(images, strength, generator=generator_for(translator, 0))

    target, setup = pedantic_call(translator, images, strength, device)
    benchmark.group = f"img2img {system['space']}-{system['sampler']} b{batch}"
    benchmark.pedantic(target, setup=setup, rounds=rounds_for(steps_run, batch),
                       warmup_rounds=WARMUP, iterations=1)
    fidelity = diffbench_env.fidelity(translator, strength, device)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        # the results row's fields (diffbench.results.row), as diffbench compare writes them
        make_row(
            **fidelity,
            steps=translator.num_steps,
            nfe=plan.nfe,
            start_timestep=plan.start_timestep,
            strength=strength,
            device=device,
            sec_per_image=median / batch,
            **latency_info(benchmark, batch),
            **memory_info(translator, images, strength, device),
            flops_per_image=translator.flops_per_image(strength),
            **settings_fields(getattr(translator, "settings", {})),
        ),
        batch=batch,
        images_per_second=batch / median,
        parameters=translator.facts["unet_parameters"] + translator.facts["vae_parameters"],
    )
    diffbench_env.profile(f"img2img-{device}-{case}-s{strength}-b{batch}", translate)
    diffbench_fidelity(translator, strength, device, case=f"{device}-{case}-s{strength}")

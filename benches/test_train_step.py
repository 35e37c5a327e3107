"""One training step of each model (forward, backward, clipping, AdamW, EMA): images/s; the
rectified-flow objective on the pixel and latent UNets too (``pixel-flow``, ``latent-flow``)."""

from __future__ import annotations

import pytest
import torch

from benchlib import DEVICES, synchronized
from diffbench.gate.cases import TRAIN_BATCH, train_cases
from diffbench.train import train_step

BATCH = TRAIN_BATCH


@pytest.mark.parametrize("kind, overrides", [
    pytest.param(case.params["kind"], case.params["overrides"],
                 id=case.name.removeprefix("train-").removesuffix(f"-b{TRAIN_BATCH}"),
                 marks=[pytest.mark.quick] if case.quick else [])
    for case in train_cases()])
@pytest.mark.parametrize("device", DEVICES)
def test_train_step(benchmark, diffbench_env, device, kind, overrides):
    run = diffbench_env.train_run(kind, device, BATCH, overrides)
    index = torch.arange(BATCH, device=device)
    generator = torch.Generator(device).manual_seed(0)
    benchmark.group = "train step"
    benchmark.pedantic(synchronized(lambda: train_step(run, index, generator), device),
                       rounds=5, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(
        batch=BATCH, device=device, images_per_second=BATCH / benchmark.stats.stats.median,
        **run.metadata["stats"],
    )
    name = run.metadata["name"]
    diffbench_env.profile(f"train-{device}-{name}", lambda: train_step(run, index, generator))

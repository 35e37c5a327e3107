"""The VAE's encode and decode alone: the latent paradigm's overhead around its UNet."""

from __future__ import annotations

import pytest
import torch

from benchlib import DEVICES, synchronized
from diffbench.gate.cases import vae_cases
from diffbench.io.checkpoints import load_model
from diffbench.models import flops_per_image


@pytest.mark.parametrize("part, batch", [
    pytest.param(case.params["part"], case.params["batch"], id=f"{case.params['part']}-"
                 f"{case.params['batch']}", marks=[pytest.mark.quick] if case.quick else [])
    for case in vae_cases()])
@pytest.mark.parametrize("device", DEVICES)
def test_vae(benchmark, diffbench_env, device, part, batch):
    vae, _ = load_model(diffbench_env.checkpoints / "vae.safetensors", device)
    images = diffbench_env.digits(device).images[:batch].to(device)
    with torch.inference_mode():
        latents = vae.encode(images)[0]
    fn, inputs = (vae.encode, images) if part == "encode" else (vae.decode, latents)

    def call():
        with torch.inference_mode():
            return fn(inputs)

    benchmark.group = f"vae b{batch}"
    benchmark.pedantic(synchronized(call, device), rounds=20, warmup_rounds=2, iterations=1)
    benchmark.extra_info.update(
        batch=batch, device=device, sec_per_image=benchmark.stats.stats.median / batch,
        flops_per_image=flops_per_image(fn, inputs),
    )
    diffbench_env.profile(f"vae-{device}-{part}-b{batch}", call)

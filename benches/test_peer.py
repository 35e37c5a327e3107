"""diffbench against the peer a user would pick instead (opt-in: ``pytest benches/ -m peer``).

The peer is diffusers' ``UNet2DModel`` (32-64-64, no attention, 32x32 padded digits) driven by
diffusers' ``DDIMScheduler``, trained with the pixel UNet's recipe and CPU-time budget
(``diffbench train peer``; ``fixtures/checkpoints/peer.safetensors``). Needs diffusers
(``pip install diffbench[parity]``). Both are measured side by side in one process on the same
digits; the goals are reported, not asserted:

3. pixel DDIM-50 gives >= 2x the peer DDIM-50's images/s (batch 64, strength 0.3) at equal or
   better class preservation and mse (scored on 256 test digits, the same seeds).
5. the pixel UNet's training throughput (images/s of one full training step) is >= 1.5x the
   peer's.
"""

from __future__ import annotations

import pytest
import torch

from benchlib import (
    BATCH,
    DEVICES,
    SCORED_IMAGES,
    STRENGTH,
    WARMUP,
    median_seconds,
    report,
    side_by_side,
    synchronized,
)
from diffbench.measure.scoring import measure_latency
from diffbench.train import train_step

pytest.importorskip("diffusers", reason="the peer needs diffusers: pip install diffbench[parity]")
from diffbench.systems.peer import PeerTranslator  # noqa: E402  (after the importorskip)

pytestmark = pytest.mark.peer
TRAIN_BATCH = 128  # the batch both models were trained at


@pytest.fixture(scope="module")
def peer_path(diffbench_env):
    path = diffbench_env.checkpoints / "peer.safetensors"
    if not path.is_file():
        pytest.skip(f"no peer checkpoint at {path}: train it with `diffbench train peer`")
    return path


@pytest.mark.parametrize("device", DEVICES)
def test_img2img_against_peer(benchmark, diffbench_env, device, peer_path):
    pixel = diffbench_env.translator("pixel", "ddim", 50, device)
    peer = PeerTranslator.from_checkpoint(peer_path, num_steps=50, device=device)
    pair = side_by_side(benchmark, diffbench_env, device, pixel, peer, 10)
    pixel_s, peer_s = pair.timed_s, pair.other_s
    peer_cl = PeerTranslator.from_checkpoint(peer_path, 50, device, channels_last=True)
    peer_cl_s = measure_latency(peer_cl, diffbench_env.digits(device).images[:BATCH], STRENGTH,
                                seed=0, repeats=5, warmup=WARMUP, memory=False)["sec_per_image"]
    # The peer is scored by the same code as every system (256 digits, seed 0).
    ours, theirs = (diffbench_env.fidelity(system, STRENGTH, device, SCORED_IMAGES)
                    for system in (pixel, peer))
    report(benchmark, "pixel DDIM-50 vs diffusers peer DDIM-50 (goal: >= 2x images/s, "
           "preservation and mse equal or better)", {
        "pixel_images_per_second": 1 / pixel_s, "peer_images_per_second": 1 / peer_s,
        "throughput_ratio": pair.ratio, "throughput_ratio_ci95_lo": pair.ratio_ci95[0],
        "throughput_ratio_ci95_hi": pair.ratio_ci95[1],
        "peer_channels_last_images_per_second": 1 / peer_cl_s,
        "throughput_ratio_peer_channels_last": peer_cl_s / pixel_s,
        "pixel_preservation": ours["preservation"], "peer_preservation": theirs["preservation"],
        "pixel_mse": ours["mse"], "peer_mse": theirs["mse"],
        "pixel_flops_per_image": pixel.flops_per_image(STRENGTH),
        "peer_flops_per_image": peer.flops_per_image(STRENGTH),
        "pixel_train_seconds": pixel.facts["train_seconds"],
        "peer_train_seconds": peer.facts["train_seconds"],
    })


@pytest.mark.parametrize("device", DEVICES)
def test_training_against_peer(benchmark, diffbench_env, device, peer_path):
    runs = {kind: diffbench_env.train_run(kind, device, TRAIN_BATCH) for kind in ("pixel", "peer")}
    index = torch.arange(TRAIN_BATCH, device=device)
    generator = torch.Generator(device).manual_seed(0)
    benchmark.group = "ratios"
    benchmark.pedantic(synchronized(lambda: train_step(runs["pixel"], index, generator), device),
                       rounds=5, warmup_rounds=1, iterations=1)
    pixel_s = benchmark.stats.stats.median
    peer_s = median_seconds(lambda: train_step(runs["peer"], index, generator), device)
    report(benchmark, "pixel UNet vs diffusers peer training (goal: >= 1.5x images/s)", {
        "batch": TRAIN_BATCH,
        "pixel_images_per_second": TRAIN_BATCH / pixel_s,
        "peer_images_per_second": TRAIN_BATCH / peer_s,
        "throughput_ratio": peer_s / pixel_s,
        "pixel_parameters": runs["pixel"].metadata["stats"]["parameters"],
        "peer_parameters": runs["peer"].metadata["stats"]["parameters"],
    })

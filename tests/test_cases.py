"""The benchmark cases shared by benches/ and ``diffbench ab``: the quick set covers what the
gate must watch, every name is unique, and each quick case builds and runs on tiny
checkpoints through the public API alone."""

from __future__ import annotations

import torch

from diffbench.gate import cases
from diffbench.io.data import load_mnist


def test_quick_set_covers_the_gate():
    known = cases.all_cases()
    quick = {name: case for name, case in known.items() if case.quick}
    assert set(quick) == set(cases.QUICK)  # every quick name is a real case
    systems = [c.params["system"] | {"batch": c.params["batch"]} for c in quick.values()
               if c.kind == "img2img"]
    assert {"space": "pixel", "sampler": "ddim", "steps": 50, "batch": 1} in systems
    assert any(s["space"] == "pixel" and s["sampler"] == "ddim" and s["batch"] == 16
               for s in systems)
    assert any(s["space"] == "latent" for s in systems)
    assert any(s["sampler"] == "ddpm" and s["steps"] < 1000 for s in systems)
    assert any(s["sampler"] in ("dpmsolver++", "unipc") for s in systems)
    assert {c.params["part"] for c in quick.values() if c.kind == "vae"} == {"encode", "decode"}
    assert [c.params["kind"] for c in quick.values() if c.kind == "train"] == ["pixel"]


def test_every_registered_sampler_has_cases_with_unique_names():
    from diffbench.sampling import SAMPLERS

    known = cases.all_cases()
    assert len(known) == len(cases.img2img_systems(SAMPLERS, ("pixel", "latent"))) * 4 + 4 + 6
    for name in SAMPLERS:
        assert any(f"-{name}-" in case for case in known)
    flow = known["img2img-latent-flow-euler-10-s0.3-b1"].params["system"]
    assert flow == {"space": "latent", "sampler": "flow-euler", "steps": 10, "prediction": "flow"}
    assert known["train-pixel-flow-b64"].params["overrides"] == ["prediction=flow"]


def test_flow_cases_run_on_tiny_checkpoints(tiny_checkpoints, mnist_dir):
    digits = load_mnist("test", mnist_dir).images[:cases.DIGITS]
    call = cases.build(cases.all_cases()["img2img-pixel-flow-heun-7-s0.5-b16"], tiny_checkpoints,
                       digits)
    out = call.run(**call.setup())
    assert out.shape == (16, 1, 28, 28) and out.isfinite().all()


def test_quick_cases_run_on_tiny_checkpoints(tiny_checkpoints, mnist_dir):
    digits = load_mnist("test", mnist_dir).images[:cases.DIGITS]
    for name in sorted(cases.QUICK - {"train-pixel-b64"}):
        call = cases.build(cases.all_cases()[name], tiny_checkpoints, digits)
        out = call.run(**call.setup())
        out = out[0] if isinstance(out, tuple) else out  # the VAE's encode: (mean, log-variance)
        assert isinstance(out, torch.Tensor) and out.isfinite().all(), name
        if name.startswith("img2img"):
            batch = cases.all_cases()[name].params["batch"]
            assert out.shape == (batch, 1, 28, 28)
            again = call.run(**call.setup())
            assert torch.equal(out, again), f"{name}: a fresh seeded generator per call"

"""Translator: checkpoints -> image-to-image, every (space, sampler) pair."""

from __future__ import annotations

import re

import pytest
import torch

from diffbench import Translator

PAIRS = [("pixel", "ddpm"), ("pixel", "ddim"), ("latent", "ddpm"), ("latent", "ddim")]


def digits(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("space, sampler", PAIRS)
def test_translation_keeps_shape_and_range(tiny_checkpoints, space, sampler):
    translator = Translator.from_checkpoints(tiny_checkpoints, space, sampler, num_steps=20)
    out = translator(digits(), 0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.float32
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    assert not torch.equal(out, digits())
    # x0 is clipped to the data range in pixel space only: latents are not bounded.
    assert translator.sampler.clip_sample is (space == "pixel")


@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_ddim_eta_zero_is_reproducible_and_ddpm_depends_on_the_seed(tiny_checkpoints, space):
    ddim = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10)
    ddpm = Translator.from_checkpoints(tiny_checkpoints, space, "ddpm", num_steps=50)

    def run(translator, seed):
        return translator(digits(), 0.6, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(ddim, 1), run(ddim, 1))
    assert torch.equal(run(ddpm, 1), run(ddpm, 1))
    assert not torch.allclose(run(ddpm, 1), run(ddpm, 2))


def test_defaults_names_and_facts(tiny_checkpoints):
    ddpm = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddpm")
    ddim = Translator.from_checkpoints(tiny_checkpoints, "latent", "ddim")
    assert ddpm.sampler.num_steps == 1000 and ddim.sampler.num_steps == 50
    assert (ddpm.name, ddim.name) == ("DDPM-1000", "LDM-DDIM-50")
    assert ddpm.facts["train_seconds"] == 1.5 and ddim.facts["train_seconds"] == 3.0  # + VAE
    assert ddpm.facts["train_cpu_seconds"] == 1.25 and ddim.facts["train_cpu_seconds"] == 2.5
    # FLOPs: the UNet once per step (15 of 50 at 0.3), plus encode and decode in latent space.
    assert ddim.flops_per_image(0.6) > ddim.flops_per_image(0.3) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"space": "voxel"}, "unknown space 'voxel'; allowed: pixel, latent"),
        ({"sampler": "lms"},
         "unknown sampler 'lms'; allowed: ddpm, ddim, dpmsolver++, euler, heun, unipc"),
        ({"sampler": "ddpm", "eta": 0.5}, "eta applies to the DDIM sampler only"),
        ({"sampler": "ddim", "eta": 2.0}, "eta must be a number in [0, 1], got 2.0"),
        ({"sampler": "ddim", "num_steps": 0}, "num_steps must be in [1, 1000], got 0"),
    ],
)
def test_bad_arguments_are_rejected(tiny_checkpoints, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Translator.from_checkpoints(tiny_checkpoints, **kwargs)


def test_bad_inputs_are_rejected(tiny_checkpoints, tmp_path):
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=5)
    with pytest.raises(ValueError, match=re.escape("x0 must be [B, 1, 28, 28]")):
        translator(torch.zeros(2, 28, 28), 0.5)
    with pytest.raises(ValueError, match="strength must be a number in"):
        translator(digits(), 1.5)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        Translator.from_checkpoints(tmp_path)

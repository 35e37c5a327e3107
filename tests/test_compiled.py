"""Compiled translators (torch.compile, CUDA graphs), the noise device and TF32: compiled
output equals eager; bad options are ValueErrors that name the value and what is allowed."""

from __future__ import annotations

import pytest
import torch

from diffbench import Translator
from diffbench.core.runtime import noise_generator, tf32_mode

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def digits(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


def translate(translator: Translator, strength: float = 0.3) -> torch.Tensor:
    return translator(digits(), strength, generator=translator.generator(0)).cpu()


@pytest.mark.slow
@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_torch_compile_matches_eager_on_cpu(tiny_checkpoints, space):
    eager = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10)
    compiled = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10,
                                           compile="compile")
    expected, got = translate(eager), translate(compiled)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    seconds = compiled.compile_seconds
    assert seconds > 0 and eager.compile_seconds == 0.0
    assert torch.allclose(translate(compiled), expected, atol=1e-4)
    assert compiled.compile_seconds == seconds  # the same shape and strength: no recompile
    assert compiled.settings == {"compile": "compile", "noise_device": "cpu", "tf32": False,
                                 "channels_last": True}


def test_compiled_ddpm_warm_up_leaves_the_generator_alone(tiny_checkpoints, monkeypatch):
    """Warm-up calls draw from a copy of the caller's generator, so DDPM's per-step noise (and
    the output) is the eager one's; the networks are left eager here to keep the test cheap."""
    monkeypatch.setattr("diffbench.systems.translate.compile_network", lambda fn, device: fn)
    eager = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddpm", num_steps=10)
    warmed = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddpm", num_steps=10,
                                         compile="compile")
    assert torch.equal(translate(warmed, 0.5), translate(eager, 0.5))


@pytest.mark.parametrize("options, message", [
    ({"compile": "jit"}, "unknown compile mode 'jit'; allowed: None (eager), compile, cudagraphs"),
    ({"compile": "cudagraphs"}, "'cudagraphs' needs a CUDA device, got 'cpu'"),
    ({"noise_device": "gpu"}, "unknown noise_device 'gpu'; allowed: device, cpu"),
    ({"tf32": True}, "tf32=True on device 'cpu'; allowed: False, or True on a CUDA device"),
])
def test_bad_options_are_value_errors(tiny_checkpoints, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10, **options)


def test_cpu_noise_device_is_the_cpu_generator(tiny_checkpoints):
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10)
    assert translator.generator(3).device.type == "cpu"
    assert torch.equal(translate(translator), translator(
        digits(), 0.3, generator=torch.Generator().manual_seed(0)))


def test_tf32_mode_restores_the_flags():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32_mode(not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize("space", ["pixel", "latent"])
@pytest.mark.parametrize("mode", ["compile", "cudagraphs"])
@pytest.mark.cuda
@NEEDS_CUDA
def test_compiled_matches_eager_on_cuda(tiny_checkpoints, space, mode):
    eager = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10,
                                        device="cuda")
    fast = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10,
                                       device="cuda", compile=mode)
    expected = translate(eager)
    for _ in range(2):  # the first call compiles or captures, the second replays
        got = translate(fast)
        assert torch.allclose(got, expected, atol=1e-3), (got - expected).abs().max()
    assert fast.compile_seconds > 0 and fast.settings["noise_device"] == "cuda"


@pytest.mark.cuda
@NEEDS_CUDA
def test_cuda_noise_devices(tiny_checkpoints):
    on_device = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10,
                                            device="cuda")
    on_cpu = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10,
                                         device="cuda", noise_device="cpu", tf32=True)
    cpu = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10)
    assert on_device.generator(0).device.type == "cuda"
    assert noise_generator(0, "cuda", "cpu").device.type == "cpu"
    assert torch.equal(translate(on_device), translate(on_device))  # seeded on the device
    assert torch.allclose(translate(on_cpu), translate(cpu), atol=1e-2)  # TF32: looser
    assert on_cpu.settings["tf32"] is True

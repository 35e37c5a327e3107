"""The diffusers peer: its network, its diffusers-driven img2img, its training and its bench."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from diffbench.cli import main
from diffbench.io.checkpoints import load_metadata
from diffbench.io.config import load_train_config
from diffbench.models.peer import PeerConfig, crop_from_peer, pad_to_peer
from diffbench.sampling import DDIMSampler
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.train import Distributed, fit, prepare_run

pytest.importorskip("diffusers", reason="the peer needs diffusers: pip install diffbench[parity]")
from diffbench.models import PeerUNet  # noqa: E402
from diffbench.systems.peer import PeerTranslator  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = PeerConfig(block_out_channels=(8, 16, 16), norm_num_groups=4)


def test_the_peer_is_the_size_the_issue_names():
    model = PeerUNet()
    assert sum(p.numel() for p in model.parameters()) == 1_062_497
    attention = [name for name, _ in model.named_modules() if name.endswith("attentions.0")]
    assert attention == ["unet.mid_block.attentions.0"]  # diffusers' default mid block only


def test_padding_adds_background_and_cropping_undoes_it():
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    padded = pad_to_peer(images)
    assert padded.shape == (3, 1, 32, 32)
    assert torch.equal(crop_from_peer(padded), images)
    border = padded.clone()
    border[..., 2:30, 2:30] = -1
    assert torch.equal(border, torch.full_like(border, -1))


def test_peer_img2img_runs_diffusers_timesteps_deterministically():
    torch.manual_seed(0)
    peer = PeerTranslator(PeerUNet(TINY).eval(), {"name": "linear", "num_timesteps": 1000}, 20,
                          start="diffusers")
    # diffusers' img2img pipelines: the scheduler's last min(int(n * strength), n) timesteps
    assert peer.plan(0.5).timesteps.tolist() == peer.scheduler.timesteps[10:].tolist()
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    first = peer(images, 0.5, generator=torch.Generator().manual_seed(3))
    again = peer(images, 0.5, generator=torch.Generator().manual_seed(3))
    other = peer(images, 0.5, generator=torch.Generator().manual_seed(4))
    assert first.shape == images.shape and first.abs().max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert peer.name == "diffusers-DDIM-20"
    with pytest.raises(ValueError, match="strength"):
        peer(images, 1.5)


def test_peer_trains_through_the_cli_and_loads_as_a_translator(tmp_path, mnist_dir, monkeypatch):
    args = ["train", "peer", "--steps", "2", "--batch-size", "4", "--out", str(tmp_path),
            "--data-dir", str(mnist_dir), "--device", "cpu", "--set", "train_images=16",
            "--set", "model.block_out_channels=[8,16,16]", "--set", "model.norm_num_groups=4",
            "--set", "experiment=peer-test"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert main(args) == 0
    path = tmp_path / "peer.safetensors"
    metadata = load_metadata(path)
    assert metadata["kind"] == "peer" and metadata["model_class"] == "PeerUNet"
    assert metadata["step"] == 2
    peer = PeerTranslator.from_checkpoint(path, num_steps=10)
    assert peer(torch.zeros(1, 1, 28, 28), 0.3).shape == (1, 1, 28, 28)


def test_time_budget_stops_training_early(tmp_path, mnist_dir):
    overrides = [f"data_dir={mnist_dir}", f"out={tmp_path}", "train_images=16", "batch_size=4",
                 "model.base_channels=8", "time_budget_s=1e-6"]
    config = load_train_config("pixel", overrides=overrides + ["steps=50"])
    run = prepare_run(config, torch.device("cpu"), Distributed(), resume=False, command="test")
    fit(run, config.steps)
    assert run.progress.step == 1  # the budget is checked between steps: one step, then stop


def test_peer_benches_are_opt_in(mnist_dir):
    """Without ``-m peer`` the group is skipped (before any checkpoint is needed)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "benches/test_peer.py", "-q", "-p", "no:cacheprovider",
         "-rs"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DIFFBENCH_DATA_DIR": str(mnist_dir)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "opt-in bench group: run with -m peer" in result.stdout
    assert " passed" not in result.stdout


@pytest.mark.parametrize(("steps", "strength"), [(50, 0.3), (50, 0.5), (10, 0.3), (20, 0.9)])
def test_peer_exact_start_is_diffbench_ddim_exact_start(steps, strength):
    """By default the peer starts where every Translator does (int(strength * T) - 1) and its
    diffusers DDIMScheduler loop equals diffbench's DDIM over the same exact timesteps."""
    torch.manual_seed(0)
    unet = PeerUNet(TINY).eval()
    peer = PeerTranslator(unet, {"name": "linear", "num_timesteps": 1000}, steps)
    ours = DDIMSampler(NoiseSchedule.linear(1000), num_steps=steps)
    t_start, stride = int(strength * 1000) - 1, 1000 // steps
    expected = list(range(t_start, -1, -stride))[: int(steps * strength)]  # by hand
    assert peer.plan(strength).start_timestep == t_start
    assert peer.plan(strength).timesteps.tolist() == expected
    images = torch.rand(2, 1, 28, 28) * 2 - 1
    theirs = peer(images, strength, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        mine = ours.img2img(unet, pad_to_peer(images), strength,
                            generator=torch.Generator().manual_seed(5), start="exact")
    # diffusers steps with float32 coefficients, diffbench with float64 tables: an untrained net
    # amplifies the rounding over up to 18 steps (measured: at most 2e-4).
    torch.testing.assert_close(theirs, crop_from_peer(mine).clamp(-1, 1), atol=1e-3, rtol=0)


def test_peer_exact_start_off_its_schedulers_grid_is_one_clear_error():
    peer = PeerTranslator(PeerUNet(TINY).eval(), {"name": "linear", "num_timesteps": 1000}, 50)
    with pytest.raises(ValueError, match=r"strength 0\.25 with 50 steps.*stride 20"):
        peer.plan(0.25)
    with pytest.raises(ValueError, match="unknown start 'late'"):
        PeerTranslator(PeerUNet(TINY).eval(), {"name": "linear", "num_timesteps": 1000},
                       start="late")

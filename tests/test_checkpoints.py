"""Safetensors checkpoints: round trips, atomic writes, clear errors, exact state restore."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffbench.core.environment import environment_facts
from diffbench.core.files import write_atomic_text
from diffbench.io import checkpoints
from diffbench.io.checkpoints import load_checkpoint, load_metadata, save_checkpoint
from diffbench.io.packed_state import pack_state, unpack_state

METADATA = {"model": {"channels": [32, 64], "attention": None}, "step": 7, "wall_s": 12.5}


def _tensors() -> dict[str, torch.Tensor]:
    weight = torch.randn(4, 3)
    return {
        "float32": torch.randn(2, 3),
        "float16": torch.randn(5).half(),
        "bfloat16": torch.randn(5).bfloat16(),
        "int64": torch.arange(6).reshape(2, 3),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "transposed": weight.t(),  # not contiguous
        "tied": weight,  # shares storage with "transposed"
    }


def _assert_same(a: Any, b: Any) -> None:
    """Equal values and equal types all the way down (tensors: dtype and exact values)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def _leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_round_trip_tensors_and_metadata(tmp_path: Path) -> None:
    tensors = _tensors()
    path = save_checkpoint(tmp_path / "runs" / "a" / "ckpt.safetensors", tensors, METADATA)

    loaded, metadata = load_checkpoint(path)

    assert metadata == METADATA
    _assert_same(dict(sorted(loaded.items())), dict(sorted(tensors.items())))  # order not kept
    assert load_metadata(path) == METADATA
    assert _leftovers(path.parent, keep=path.name) == []


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c.safetensors", {"x": torch.ones(1)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "c.safetensors", {"x": torch.ones(3)}, {"step": 1})

    def crash_half_way(tensors: dict, filename: Path, metadata: dict) -> None:
        save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(40)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"x": torch.zeros(3)}, {"step": 2})

    tensors, metadata = load_checkpoint(path)
    assert metadata == {"step": 1}
    assert torch.equal(tensors["x"], torch.ones(3))
    assert _leftovers(tmp_path, keep=path.name) == []


def test_write_atomic_text(tmp_path: Path) -> None:
    path = write_atomic_text(tmp_path / "results" / "summary.json", json.dumps({"fid": 1.5}))
    assert json.loads(path.read_text()) == {"fid": 1.5}

    with pytest.raises(UnicodeEncodeError):
        write_atomic_text(path, "lone surrogate \ud800 cannot be UTF-8")

    assert json.loads(path.read_text()) == {"fid": 1.5}
    assert _leftovers(path.parent, keep=path.name) == []


def test_missing_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(missing)

    pickled = tmp_path / "model.pt"
    torch.save({"x": torch.ones(2)}, pickled)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.ones(2)}, plain)
    for path in (pickled, plain):
        for load in (load_checkpoint, load_metadata):
            with pytest.raises(ValueError, match=rf"{path.name}.*diffbench") as info:
                load(path)
            assert "safetensors" in str(info.value)


def test_pack_unpack_nested_structure_survives_a_checkpoint(tmp_path: Path) -> None:
    state = {
        0: {"exp_avg": torch.randn(3), "step": torch.tensor(4.0)},
        3: [torch.arange(3), (1, 2.5, None, True, "text"), {"flag": False}],
        "name": "adamw",
        (2, "pair"): None,
        2.5: [],
        None: {},
        True: (),
    }
    tensors, structure = pack_state(state)
    assert set(tensors) == {"0/exp_avg", "0/step", "3/0"}

    path = save_checkpoint(tmp_path / "s.safetensors", tensors, {"structure": structure})
    loaded, metadata = load_checkpoint(path)

    _assert_same(unpack_state(loaded, metadata["structure"]), state)


def test_pack_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match="object"):
        pack_state({"a": [object()]})
    with pytest.raises(TypeError, match="frozenset"):
        pack_state({frozenset({1}): 1})


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _optimiser(model: nn.Module) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)


def _train(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, seed: int) -> None:
    data = torch.Generator().manual_seed(seed)
    for _ in range(3):
        loss = model(torch.randn(16, 4, generator=data)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_adamw_continues_bit_identically(tmp_path: Path) -> None:
    model = _model(0)
    opt, sched = _optimiser(model)
    _train(model, opt, sched, seed=1)
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    tensors, structure = pack_state(state)
    path = save_checkpoint(tmp_path / "train.safetensors", tensors, {"state": structure})

    loaded, metadata = load_checkpoint(path)
    restored = unpack_state(loaded, metadata["state"])
    resumed = _model(99)
    resumed.load_state_dict(restored["model"])
    resumed_opt, resumed_sched = _optimiser(resumed)
    resumed_opt.load_state_dict(restored["opt"])
    resumed_sched.load_state_dict(restored["sched"])

    _train(model, opt, sched, seed=2)
    _train(resumed, resumed_opt, resumed_sched, seed=2)

    _assert_same(resumed.state_dict(), model.state_dict())
    _assert_same(resumed_opt.state_dict(), opt.state_dict())
    assert resumed_sched.get_last_lr() == sched.get_last_lr()


def test_rng_states_round_trip(tmp_path: Path) -> None:
    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}
    expected = torch.rand(8)
    tensors, structure = pack_state(rng)
    save_checkpoint(tmp_path / "rng.safetensors", tensors, {"rng": structure})

    torch.manual_seed(12345)
    loaded, metadata = load_checkpoint(tmp_path / "rng.safetensors")
    restored = unpack_state(loaded, metadata["rng"])
    _assert_same(restored, rng)
    torch.set_rng_state(restored["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all(restored["cuda"])

    assert torch.equal(torch.rand(8), expected)


def test_environment_facts_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    facts = environment_facts()

    assert facts["torch"] == torch.__version__
    assert facts["python"] == platform.python_version()
    assert facts["git_commit"] is None and facts["git_dirty"] is False
    assert isinstance(facts["cpu"], str | None)
    assert (facts["cuda_device"] is None) == (not torch.cuda.is_available())
    json.dumps(facts)
    hostname = platform.node()
    if len(hostname) > 3:
        assert all(hostname not in str(value) for value in facts.values())


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_environment_facts_in_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (tmp_path / "a.txt").write_text("a")
    for args in (["init", "-q"], ["add", "a.txt"], ["commit", "-q", "-m", "a"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)

    facts = environment_facts()
    assert facts["git_commit"] == head.stdout.strip() and facts["git_dirty"] is False

    (tmp_path / "a.txt").write_text("changed")
    assert environment_facts()["git_dirty"] is True

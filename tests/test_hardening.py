"""Hardening: bad input is one clear error, untrusted files are never unpickled,
faults lose nothing, runs are reproducible, and fuzzed configs and sampler arguments fail only
with a ValueError."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diffbench.cli import main
from diffbench.core.errors import InputError
from diffbench.evaluate import load_digits, score_system
from diffbench.io.checkpoints import (
    check_writable_dir,
    load_checkpoint,
    load_metadata,
    load_model,
    save_checkpoint,
    sha256_file,
)
from diffbench.io.config import (
    CompareConfig,
    TrainConfig,
    load_compare_config,
    load_train_config,
)
from diffbench.measure.metrics import Judge
from diffbench.models import UNet, UNetConfig
from diffbench.results.tracking import TrackingWarning
from diffbench.sampling import DDIMSampler, DDPMSampler
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.systems.translate import Translator

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def closed_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_error(code: int, err: str, *fragments: str) -> str:
    """Exit status 2 and exactly one stderr line, `error: ...`, containing every fragment."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- 1. bad input: every command, one `error:` line, exit status 2 ----------------------------


@pytest.fixture
def unwritable(tmp_path):
    """An output folder that cannot be created: under a read-only folder, or for root (who
    may write anywhere else) under /sys."""
    if os.geteuid() != 0:
        parent = tmp_path / "read-only"
        parent.mkdir()
        parent.chmod(0o555)
        yield parent / "out"
        parent.chmod(0o755)
        return
    target = Path("/sys/diffbench-hardening-out")
    try:
        target.mkdir()
    except OSError:
        yield target
        return
    target.rmdir()
    pytest.skip("/sys is writable on this machine; no read-only folder to test with")


@pytest.fixture
def places(tmp_path, mnist_dir, tiny_checkpoints, unwritable, monkeypatch):
    """The paths the bad-input cases name, by placeholder (and no MLflow store to write to)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    (tmp_path / "empty").mkdir()
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(tiny_checkpoints / "classifier.safetensors", incomplete)
    (tmp_path / "malformed.yaml").write_text("steps: [1, 2\nlr: 0.1\n")
    (tmp_path / "list.yaml").write_text("- steps\n- 3\n")
    return {
        "mnist": str(mnist_dir),
        "ckpt": str(tiny_checkpoints),
        "tmp": str(tmp_path),
        "nomnist": str(tmp_path / "empty"),
        "incomplete": str(incomplete),
        "ro": str(unwritable),
    }


DEMO = "demo --data-dir {mnist} --out {tmp}/demo --num-references 10"
TRAIN = (
    "train pixel --data-dir {mnist} --out {tmp}/run --device cpu --set train_images=16 "
    "--batch-size 4 --set steps=1"
)
EVALUATE = "evaluate --checkpoints {ckpt} --data-dir {mnist} --device cpu --out {tmp}/e.json"
COMPARE = (
    "compare --checkpoints {ckpt} --data-dir {mnist} --device cpu --out {tmp}/compare "
    "--steps 10 --num-images 2"
)


def cli(template: str, **paths: object) -> list[str]:
    """``template`` split into words, each formatted with ``paths`` (which may hold spaces)."""
    return [word.format(**paths) for word in template.split()]


BAD_INPUT = [
    # demo
    (DEMO + " --strength 1.5", ["strength must be a number in (0, 1], got 1.5"]),
    (DEMO + " --strength 0", ["strength must be a number in (0, 1], got 0.0"]),
    (DEMO + " --strength 0.01", ["strength 0.01 leaves no denoising step", "0.02"]),
    (DEMO + " --num-images 0", ["--num-images: expected a positive integer, got 0"]),
    (DEMO + " --seed -1", ["--seed: expected a seed in [0, 4294967295], got '-1'"]),
    (DEMO + " --steps 3", ["unrecognized arguments: --steps 3"]),
    (DEMO + " --data-dir {nomnist}", ["MNIST not found in {nomnist}", "train-images"]),
    (DEMO + " --out {ro}", ["output folder {ro} is not writable", "allowed:"]),
    # train
    ("train gan", ["argument kind: invalid choice: 'gan'", "'pixel'"]),
    (TRAIN + " --steps 0", ["--steps: expected a positive integer, got 0"]),
    (TRAIN + " --set steps=0", ["steps: Input should be greater than or equal to 1 (got 0)"]),
    (
        TRAIN + " --set schedule.name=quadratic",
        ["schedule.name: Input should be 'linear', 'scaled_linear' or 'cosine' (got 'quadratic')"],
    ),
    (
        TRAIN + " --set colour=red",
        [
            "colour: Extra inputs are not permitted (got 'red')",
            "allowed keys: batch_size, checkpoint_every",
        ],
    ),
    (TRAIN + " --set schedule.steps=5", ["allowed keys: name, num_timesteps"]),
    (TRAIN + " --set lr=fast", ["lr: Input should be a valid number", "(got 'fast')"]),
    (TRAIN + " --set lr=.inf", ["lr: Input should be a finite number (got inf)"]),
    (
        TRAIN + " --set model.base_channels=wide",
        ["model.base_channels: Input should be a valid integer", "(got 'wide'); allowed: int"],
    ),
    (TRAIN + " --set model.num_groups=3", ["model: UNetConfig(", "cannot be built"]),
    (TRAIN + " --set seed=-1", ["seed: Input should be greater than or equal to 0"]),
    (TRAIN + " --config {tmp}/none.yaml", ["config file {tmp}/none.yaml does not exist"]),
    (
        TRAIN + " --config {tmp}/malformed.yaml",
        ["config file {tmp}/malformed.yaml is not valid YAML", "line 2", "allowed: a YAML mapping"],
    ),
    (TRAIN + " --config {tmp}/list.yaml", ["must hold a mapping of config keys, got list"]),
    (TRAIN + " --device tpu", ["argument --device: invalid choice: 'tpu'", "'cpu'"]),
    pytest.param(
        TRAIN + " --device cuda", ["device 'cuda'", "no CUDA device", "cpu"], marks=NO_CUDA
    ),
    (TRAIN + " --data-dir {nomnist}", ["MNIST not found in {nomnist}"]),
    (TRAIN + " --out {ro}", ["output folder {ro} is not writable"]),
    (TRAIN + " --resume", ["--resume: no training state at {tmp}/run/pixel.state.safetensors"]),
    (
        TRAIN.replace("pixel", "latent --set vae_checkpoint={tmp}/vae.safetensors", 1),
        ["no checkpoint file at {tmp}/vae.safetensors"],
    ),
    # evaluate
    (
        EVALUATE + " --checkpoints {tmp}/nowhere",
        ["checkpoints folder {tmp}/nowhere does not exist", "pixel.safetensors"],
    ),
    (
        EVALUATE + " --checkpoints {incomplete}",
        ["lacks pixel.safetensors, latent.safetensors, vae.safetensors"],
    ),
    pytest.param(EVALUATE + " --device cuda", ["no CUDA device"], marks=NO_CUDA),
    (EVALUATE + " --out {ro}/evaluate.json", ["output folder {ro} is not writable"]),
    (EVALUATE + " --out {tmp}", ["--out {tmp} is a folder; allowed: a file path"]),
    (EVALUATE + " --data-dir {nomnist}", ["MNIST not found in {nomnist}"]),
    (EVALUATE + " --sweep-images -3", ["expected a positive integer, got -3"]),
    # compare
    (COMPARE + " --strength 1.5", ["strengths.0: Input should be less than or equal to 1"]),
    (COMPARE + " --strength 0.0005", ["strength 0.0005 leaves no denoising step: it starts "
                                        "below timestep 0 of 1000"]),
    (COMPARE + " --steps 0", ["--steps: expected a positive integer, got 0"]),
    (
        COMPARE + " --set systems.0.sampler=lms",
        # the built-ins, then any sampler an installed package declares
        ["systems.0.sampler: Input should be 'ddpm', 'ddim', 'dpmsolver++', 'euler', 'heun', "
         "'unipc', 'flow-euler', 'flow-heun', 'flow-dpmsolver++', 'consistency'", "'meanflow'",
         "(got 'lms')"],
    ),
    (COMPARE + " --set systems.0.space=video", ["Input should be 'pixel' or 'latent'"]),
    (
        COMPARE + " --set systems.0.colour=red",
        ["allowed keys: eta, model, name, num_images, prediction, sampler, shift, space, "
         "spacing, steps"],
    ),
    (COMPARE + " --set systems.0.steps=5000", ["num_steps must be in [1, 1000], got 5000"]),
    (COMPARE + " --set timing_batch=many", ["timing_batch: Input should be a valid integer"]),
    (COMPARE + " --set systems.11.steps=3", ["'11' is not an index of the 11 items of the list"]),
    (COMPARE + " --config {tmp}/malformed.yaml", ["is not valid YAML"]),
    (COMPARE + " --checkpoints {tmp}/nowhere", ["checkpoints folder {tmp}/nowhere does not"]),
    (COMPARE + " --checkpoints {incomplete}", ["lacks pixel.safetensors"]),
    pytest.param(COMPARE + " --device cuda", ["no CUDA device"], marks=NO_CUDA),
    (COMPARE + " --data-dir {nomnist}", ["MNIST not found in {nomnist}"]),
    (COMPARE + " --out {ro}", ["output folder {ro} is not writable"]),
]


@pytest.mark.parametrize("args, fragments", BAD_INPUT)
def test_bad_input_is_one_error_line_and_exit_status_2(args, fragments, places, capsys):
    code = main(cli(args, **places))
    captured = capsys.readouterr()
    assert_one_error(code, captured.err, *(f.format(**places) for f in fragments))
    assert "wrote" not in captured.out


def test_output_folder_checks_catch_full_and_unusable_folders(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "out").is_dir()
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone
    with pytest.raises(ValueError, match=r"has [\d.]+ MiB free; at least \d+ MiB is needed"):
        check_writable_dir(tmp_path, min_free_bytes=2**62)  # as a full disk looks
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=rf"output folder {tmp_path}/file/out is not writable"):
        check_writable_dir(tmp_path / "file" / "out")


# -- 2. untrusted files -----------------------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_the_payload_would_write_its_marker_if_unpickled(tmp_path):
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so its absence below means nothing was unpickled


def test_planted_pickles_are_never_unpickled(tiny_checkpoints, mnist_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    planted = tmp_path / "planted"
    shutil.copytree(tiny_checkpoints, planted)
    (planted / "pixel.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"state_dict": Payload(marker)}, planted / "latent.safetensors")
    for name in ("pixel.pt", "pixel.ckpt", "pixel.pth"):
        torch.save(Payload(marker), planted / name)
    for name in ("pixel", "latent"):
        for load in (load_checkpoint, load_metadata, load_model):
            with pytest.raises(ValueError, match=rf"{name}.safetensors is not a safetensors file"):
                load(planted / f"{name}.safetensors")
    code = main(cli(COMPARE, ckpt=planted, mnist=mnist_dir, tmp=tmp_path))
    assert_one_error(code, capsys.readouterr().err, f"{planted}/pixel.safetensors is not a")
    # Only pickles where the checkpoint should be: it is missing, and nothing is unpickled.
    only_pickles = tmp_path / "only_pickles"
    only_pickles.mkdir()
    shutil.copy(tiny_checkpoints / "classifier.safetensors", only_pickles)
    for name in ("pixel.pt", "pixel.ckpt", "pixel.bin"):
        torch.save(Payload(marker), only_pickles / name)
    code = main(cli(EVALUATE, ckpt=only_pickles, mnist=mnist_dir, tmp=tmp_path))
    assert_one_error(code, capsys.readouterr().err, "lacks pixel.safetensors")
    assert not marker.exists()


def test_truncated_and_corrupted_checkpoints_are_rejected_naming_the_file(
    tiny_checkpoints, tmp_path
):
    data = (tiny_checkpoints / "pixel.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    damaged = {
        "truncated.safetensors": (data[: len(data) // 2], "is not a safetensors file"),
        "header-only.safetensors": (data[:header_end], "is not a safetensors file"),
        "stub.safetensors": (data[:5], "is not a safetensors file"),
        "empty.safetensors": (b"", "is not a safetensors file"),
        "bad-header.safetensors": (data[:8] + b"\xff" * 16 + data[24:], "is not a safetensors"),
        "flipped.safetensors": (
            data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
            "is corrupt: its tensors do not match the sha256",
        ),
    }
    for name, (content, message) in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{tmp_path / name} {message}"):
            load_model(tmp_path / name)
    assert load_model(tiny_checkpoints / "pixel.safetensors")[0].cfg.base_channels == 8


def test_checkpoint_that_does_not_match_its_config_is_a_clear_error(
    tiny_checkpoints, mnist_dir, tmp_path, capsys
):
    unet = UNet(UNetConfig(base_channels=8))
    metadata = load_metadata(tiny_checkpoints / "pixel.safetensors")
    metadata["model_config"]["base_channels"] = 16  # the weights are of an 8-channel UNet
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_checkpoints, mismatched)
    save_checkpoint(mismatched / "pixel.safetensors", unet.state_dict(), metadata)
    with pytest.raises(ValueError, match="pixel.safetensors does not match the UNet config") as e:
        load_model(mismatched / "pixel.safetensors")
    assert "size mismatch" in str(e.value) and "\n" not in str(e.value)
    metadata["model_config"] = {**metadata["model_config"], "base_channels": 8, "depth": 3}
    save_checkpoint(mismatched / "pixel.safetensors", unet.state_dict(), metadata)
    with pytest.raises(ValueError, match="does not match the UNet config.*depth"):
        load_model(mismatched / "pixel.safetensors")
    code = main(cli(COMPARE, ckpt=mismatched, mnist=mnist_dir, tmp=tmp_path))
    assert_one_error(code, capsys.readouterr().err, f"{mismatched}/pixel.safetensors does not")


def test_checkpoint_without_training_metadata_is_a_clear_error(tiny_checkpoints, tmp_path):
    """Weights that load but lack what `diffbench train` records (a foreign file)."""
    unet = UNet(UNetConfig(base_channels=8))
    metadata = load_metadata(tiny_checkpoints / "pixel.safetensors")
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_checkpoints, foreign)
    del metadata["train_seconds"], metadata["stats"]
    save_checkpoint(foreign / "pixel.safetensors", unet.state_dict(), metadata)
    with pytest.raises(ValueError, match="pixel.safetensors lacks the metadata train_seconds, st"):
        Translator.from_checkpoints(foreign, "pixel", "ddim", 10)


# -- 2b. only bad input is an `error:` line ---------------------------------------------------

PLANTED_CHILD = """
import sys
import diffbench.models.unet as unet
def forward(self, x, t):
    raise ValueError("planted bug: not the user's input")
unet.UNet.forward = forward
from diffbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("planted", [
    RuntimeError("planted bug"),
    ValueError("planted ValueError from inside torch"),
    torch.OutOfMemoryError("planted CUDA out of memory"),
])
def test_an_unexpected_failure_keeps_its_traceback(
    planted, tiny_checkpoints, mnist_dir, tmp_path, monkeypatch, capsys
):
    """A failure that is not bad input (a bug, out of memory, a ValueError that no input
    check raised) propagates out of main with its own type, never as `error:` + exit 2."""
    def fail(self, *args, **kwargs):
        raise planted

    monkeypatch.setattr(UNet, "forward", fail)
    with pytest.raises(type(planted), match="planted"):
        main(cli(COMPARE, ckpt=tiny_checkpoints, mnist=mnist_dir, tmp=tmp_path))
    assert "error:" not in capsys.readouterr().err


def test_an_unexpected_failure_exits_1_with_a_traceback(tiny_checkpoints, mnist_dir, tmp_path):
    args = cli(COMPARE, ckpt=tiny_checkpoints, mnist=mnist_dir, tmp=tmp_path)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    result = subprocess.run([sys.executable, "-c", PLANTED_CHILD, *args], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "planted bug: not the user's input" in result.stderr
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())


# -- 3. faults lose nothing -------------------------------------------------------------------


# The child: `diffbench train` whose training step, once ``pause_at`` steps are done, writes a
# readiness file and waits (at most 120 s) until a stop signal has arrived, then runs the step.
SIGNAL_CHILD = """
import sys, time
from pathlib import Path
import diffbench.train.loop as train
from diffbench.cli import main
ready, pause_at, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
original = train.train_step
def train_step(run, index, generator):
    if run.progress.step == pause_at:
        ready.write_text(str(pause_at))
        deadline = time.monotonic() + 120
        while not run.stop_signals and time.monotonic() < deadline:
            time.sleep(0.01)
    return original(run, index, generator)
train.train_step = train_step
sys.exit(main(args))
"""


def test_sigterm_mid_training_saves_the_last_step_and_resume_finishes(tmp_path, mnist_dir):
    """A SIGTERM lets the step in flight finish, checkpoints it and exits 143; --resume then
    reaches exactly the weights of an uninterrupted run. The child says when it is at step 5
    (after the checkpoint of step 4) and waits for the signal there, so no machine load can let
    it finish first."""
    steps, pause_at = 60, 5
    args = cli(
        "train pixel --data-dir {mnist} --steps {steps} --batch-size 8 --device cpu "
        "--set train_images=256 --set checkpoint_every=2 --set warmup_steps=2 "
        "--set log_every=50 --set model.base_channels=8 --set experiment=test-sigterm",
        mnist=mnist_dir,
        steps=steps,
    )
    run_dir, ready = tmp_path / "interrupted", tmp_path / "ready"
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed_port()}")
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_CHILD, str(ready), str(pause_at), *args,
         "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state = run_dir / "pixel.state.safetensors"
    deadline = time.monotonic() + 240
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), f"the child never reached step {pause_at}: {process.poll()}"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training interrupted by SIGTERM after step "), err[-3000:]
    step = int(last.split("after step ")[1].split(";")[0])
    assert step == pause_at + 1  # the step in flight when the signal came, then it stopped
    assert 2 <= step < steps and f"checkpoint saved to {state}" in last
    assert load_metadata(state)["step"] == load_metadata(run_dir / "pixel.safetensors")["step"]
    assert load_metadata(state)["step"] == step  # the last completed step, not the last multiple
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        with pytest.warns(TrackingWarning):
            assert main([*args, "--out", str(run_dir), "--resume"]) == 0
        with pytest.warns(TrackingWarning):
            assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    resumed, resumed_meta = load_checkpoint(run_dir / "pixel.state.safetensors")
    straight, straight_meta = load_checkpoint(tmp_path / "straight" / "pixel.state.safetensors")
    assert resumed_meta["step"] == straight_meta["step"] == steps
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.fixture(scope="module")
def one_system_config(tmp_path_factory):
    """The cheapest comparison: pixel DDIM-10 at strength 0.3 on two digits."""
    path = tmp_path_factory.mktemp("config") / "compare.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "systems": [{"space": "pixel", "sampler": "ddim", "steps": 10}],
                "strengths": [0.3],
                "num_images": 2,
                "grid_images": 2,
                "timing_batch": 2,
                "repeats": 1,
                "warmup": 0,
                "seed": 7,
                "device": "cpu",
            }
        )
    )
    return path


def test_compare_with_a_dead_tracking_server_writes_results_and_warns_once(
    one_system_config, tiny_checkpoints, mnist_dir, tmp_path, monkeypatch, capsys
):
    """Two runs against a server that refuses connections: exit 0, one warning each, the
    files on disk, identical metrics, and what reproduces them recorded in results.json."""
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rows = []
    for run in ("first", "second"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            template = (
                "compare --config {config} --checkpoints {ckpt} --data-dir {mnist} --out {out}"
            )
            code = main(
                cli(
                    template,
                    config=one_system_config,
                    ckpt=tiny_checkpoints,
                    mnist=mnist_dir,
                    out=tmp_path / run,
                )
            )
        assert code == 0, capsys.readouterr().err
        ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
        assert len(ours) == 1 and uri in str(ours[0].message)
        for name in ("results.md", "i2i_comparison.png", "pareto.png"):
            assert (tmp_path / run / name).stat().st_size > 0
        (row,) = json.loads((tmp_path / run / "results.json").read_text())
        rows.append(row)
    first, second = rows
    assert first["seed"] == 7 and first["device"] == "cpu" and first["torch"] == torch.__version__
    used = ("classifier.safetensors", "noisy_classifier.safetensors", "pixel.safetensors")
    assert first["checkpoint_sha256"] == {n: sha256_file(tiny_checkpoints / n) for n in used}
    timing = {"sec_per_image", "sec_per_image_min", "sec_per_image_max", "sec_per_image_p50",
              "sec_per_image_p90", "sec_per_image_p99", "peak_memory_bytes",
              "scoring_sec_per_image"}
    assert {k: v for k, v in first.items() if k not in timing} == {
        k: v for k, v in second.items() if k not in timing
    }


def test_benches_with_a_dead_tracking_server_still_write_their_json(
    tiny_checkpoints, mnist_dir, tmp_path
):
    uri = f"http://127.0.0.1:{closed_port()}"
    env = dict(os.environ, DIFFBENCH_DATA_DIR=str(mnist_dir), MLFLOW_TRACKING_URI=uri)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--rootdir={REPO}",
            "--diffbench-checkpoints",
            str(tiny_checkpoints),
            "--diffbench-mlflow",
            "--benchmark-json",
            str(tmp_path / "bench.json"),
            str(REPO / "benches" / "test_vae.py") + "::test_vae[cpu-encode-1]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "TrackingWarning" in output and uri in output
    (saved,) = (tmp_path / "results" / "benchmarks").glob("bench-*.json")  # before MLflow
    for path in (saved, tmp_path / "bench.json"):
        report = json.loads(path.read_text())
        assert len(report["benchmarks"]) == 1
        facts = report["diffbench"]
        assert facts["seed"] == 0 and facts["torch"] == torch.__version__
        assert facts["devices"] == ["cpu"] and facts["checkpoints"] == str(tiny_checkpoints)
        assert facts["checkpoint_sha256"] == {
            p.name: sha256_file(p) for p in sorted(tiny_checkpoints.glob("*.safetensors"))
        }


# -- 4. reproducible --------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_ddim_outputs_and_metrics_are_bitwise_identical_across_runs(
    tiny_checkpoints, mnist_dir, space
):
    runs = []
    for _ in range(2):
        translator = Translator.from_checkpoints(tiny_checkpoints, space, "ddim", num_steps=10)
        judge = Judge.from_checkpoints(tiny_checkpoints)
        digits = load_digits(judge, 4, str(mnist_dir))
        row, outputs, _ = score_system(translator, judge, digits, 0.5, seed=3)
        runs.append((row, outputs))
    (first, out_a), (second, out_b) = runs
    assert torch.equal(out_a, out_b)
    first.pop("scoring_sec_per_image"), second.pop("scoring_sec_per_image")
    assert first == second and first["num_images"] == 4


# -- 5. fuzzing: every failure is an InputError -----------------------------------------------
# Each fuzz test runs a known-good example first (Hypothesis runs explicit examples before
# generated ones), records which cases reached the success path, and asserts the known-good
# one did and that at least MIN_SUCCESS of all did: a fuzzer whose cases all fail validation
# would test nothing but the error path. Generation is derandomized, so the shares are stable.

MIN_SUCCESS = 0.1  # the fuzzer explores the success path too, not only the error paths
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PLAUSIBLE = st.integers(1, 4) | st.sampled_from([0.3, 0.5, 1e-3, "cpu", "linear", "cosine"])
"""Values a real config holds, so that a fair share of cases pass validation."""
TRAIN_KEYS = [
    *TrainConfig.model_fields,
    "schedule.name",
    "schedule.num_timesteps",
    "model.base_channels",
    "model.channel_mults",
    "model.attention_levels",
]
COMPARE_KEYS = [
    *CompareConfig.model_fields,
    "systems.0.steps",
    "systems.1.sampler",
    "systems.0",
    "systems.2.eta",
]


def valid_value(key: str):
    """A value the config accepts for ``key``: its field's default (keys without one, and
    dotted keys, get a plausible value)."""
    field = {**TrainConfig.model_fields, **CompareConfig.model_fields}.get(key)
    if field is None or field.is_required() or not isinstance(field.default, (int, float, str)):
        return PLAUSIBLE
    return st.just(field.default) | PLAUSIBLE


def overrides(keys: list[str]):
    """``--set`` strings: a known or random key, and a YAML value or random text; half of the
    lists hold only known keys with plausible values."""
    def dump(value):
        return yaml.safe_dump(value, default_flow_style=True).strip()

    plausible = st.sampled_from(keys).flatmap(
        lambda k: valid_value(k).map(lambda v: f"{k}={dump(v)}"))
    key = st.sampled_from(keys) | st.text(max_size=10)
    value = (PLAUSIBLE | VALUES).map(dump)
    wild = st.tuples(key, value | st.text(max_size=12)).map("=".join) | st.text()
    return st.lists(plausible, max_size=2) | st.lists(wild, max_size=3)


def mappings(keys: list[str], max_size: int):
    """YAML mappings: half of them only known keys with plausible values."""
    plausible = st.lists(st.sampled_from(keys), max_size=2, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: valid_value(k) for k in ks}))
    return plausible | st.dictionaries(
        st.sampled_from(keys) | st.text(max_size=8), PLAUSIBLE | VALUES, max_size=max_size
    )


def _write(text: str) -> Path:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as f:
        f.write(text)
    return Path(f.name)


def run_fuzz(fuzz, outcomes: list[bool], name: str) -> None:
    """Run a Hypothesis test that appends True (success path) or False (InputError) to
    ``outcomes``; the known-good example runs first and must succeed."""
    outcomes.clear()
    fuzz()
    share = sum(outcomes) / len(outcomes)
    print(f"{name}: {sum(outcomes)} of {len(outcomes)} cases reached the success path "
          f"({share:.0%})")
    assert outcomes[0], "the known-good example was rejected"
    assert share >= MIN_SUCCESS, f"only {share:.0%} of fuzzed cases reached the success path"


TRAIN_OUTCOMES: list[bool] = []


@FUZZ
@example(kind="pixel", mapping={"lr": 0.001}, raw_text=None, sets=["batch_size=4"])
@given(
    kind=st.sampled_from(["pixel", "vae", "latent", "classifier", "peer"]),
    mapping=mappings(TRAIN_KEYS[:-5], max_size=5),
    raw_text=st.none() | st.none() | st.text(max_size=40),
    sets=overrides(TRAIN_KEYS),
)
def fuzz_train_configs(kind, mapping, raw_text, sets):
    default = {"kind": kind, "steps": 3, **mapping}
    path = _write(raw_text if raw_text is not None else yaml.safe_dump(default))
    try:
        config = load_train_config(kind, path, sets, steps=None)
    except InputError:  # ours; a torch or Python ValueError is a bug and fails
        TRAIN_OUTCOMES.append(False)
        return
    finally:
        path.unlink()
    assert isinstance(config, TrainConfig) and config.kind == kind and config.steps >= 1
    assert config.build_model_config() is not None
    TRAIN_OUTCOMES.append(True)


def test_fuzzed_train_configs_are_valid_or_a_config_error():
    run_fuzz(fuzz_train_configs, TRAIN_OUTCOMES, "train configs")


COMPARE_OUTCOMES: list[bool] = []


@FUZZ
@example(mapping={"num_images": 4}, sets=["strengths=[0.3]"], steps=20)
@given(
    mapping=mappings(COMPARE_KEYS[:-4], max_size=4),
    sets=overrides(COMPARE_KEYS),
    steps=st.none() | st.integers(1, 2000),
)
def fuzz_compare_configs(mapping, sets, steps):
    path = _write(
        yaml.safe_dump({**yaml.safe_load((REPO / "configs/compare.yaml").read_text()), **mapping})
    )
    try:
        config = load_compare_config(path, sets, steps=steps)
    except InputError:  # ours; a torch or Python ValueError is a bug and fails
        COMPARE_OUTCOMES.append(False)
        return
    finally:
        path.unlink()
    assert all(0 < s <= 1 for s in config.strengths) and config.systems
    COMPARE_OUTCOMES.append(True)


def test_fuzzed_compare_configs_are_valid_or_a_config_error():
    run_fuzz(fuzz_compare_configs, COMPARE_OUTCOMES, "compare configs")


def tiny_eps(x, t):
    """A model that predicts zero noise (any callable model(x_t, t) -> eps will do)."""
    return torch.zeros_like(x)


NUMBERS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 120)
    | st.text(max_size=3)
    | st.floats(-2, 2)
    | st.just(float("nan"))
    | st.sampled_from([float("inf"), 10**30])
)
SAMPLER_OUTCOMES: list[bool] = []


SAMPLER_ARGUMENTS = {
    "wild": dict(
        num_steps=NUMBERS,
        eta=NUMBERS,
        spacing=st.sampled_from(["leading", "trailing", "linspace", "uniform", ""]),
        variance=st.sampled_from(["fixed_small", "fixed_large", "learned"]),
        strength=NUMBERS,
    ),
    "plausible": dict(
        num_steps=st.integers(1, 100),
        eta=st.floats(0, 1),
        spacing=st.sampled_from(["leading", "trailing", "linspace"]),
        variance=st.sampled_from(["fixed_small", "fixed_large"]),
        strength=st.floats(0.05, 1),
    ),
}


@FUZZ
@example(timesteps=100, ddim=True, clip=True, args=dict(
    num_steps=10, eta=0.0, spacing="leading", variance="fixed_small", strength=0.5))
@given(
    timesteps=st.integers(1, 100),
    ddim=st.booleans(),
    clip=st.booleans(),
    args=st.one_of(*(st.fixed_dictionaries(a) for a in SAMPLER_ARGUMENTS.values())),
)
def fuzz_sampler_arguments(timesteps, ddim, clip, args):
    num_steps, eta, strength = args["num_steps"], args["eta"], args["strength"]
    spacing, variance = args["spacing"], args["variance"]
    schedule = NoiseSchedule.linear(timesteps, beta_end=0.2)
    x0 = torch.linspace(-1, 1, 32).reshape(2, 1, 4, 4)
    try:
        if ddim:
            sampler = DDIMSampler(schedule, num_steps, eta=eta, spacing=spacing, clip_sample=clip)
        else:
            sampler = DDPMSampler(
                schedule, num_steps, variance=variance, spacing=spacing, clip_sample=clip
            )
        out = sampler.img2img(tiny_eps, x0, strength, generator=torch.Generator().manual_seed(0))
    except InputError:  # ours; a torch or Python ValueError is a bug and fails
        SAMPLER_OUTCOMES.append(False)
        return
    assert out.shape == x0.shape and torch.isfinite(out).all()
    assert 1 <= len(sampler.plan(strength).timesteps) <= sampler.num_steps <= timesteps
    SAMPLER_OUTCOMES.append(True)


def test_fuzzed_sampler_arguments_work_or_raise_value_error():
    run_fuzz(fuzz_sampler_arguments, SAMPLER_OUTCOMES, "sampler arguments")

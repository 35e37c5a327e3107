"""Nothing lost: an earlier run is never overwritten by surprise, every bad input is one
`error:` line (exit 2) that leaves the files on disk as they were, and a system whose output
goes non-finite is recorded as failed while the others are measured."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from test_hardening import assert_one_error, closed_port

from diffbench.cli import main
from diffbench.core.errors import InputError
from diffbench.io.checkpoints import load_checkpoint, load_model, save_checkpoint
from diffbench.io.config import load_compare_config, load_train_config

TINY = """\
systems:
  - {space: pixel, sampler: ddim, steps: 2}
  - {space: pixel, sampler: euler, steps: 2}
strengths: [0.5]
num_images: 2
grid_images: 2
timing_batch: 1
repeats: 1
warmup: 0
"""


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_checkpoints, mnist_dir):
    """A tiny comparison run whole and in two shards, and the arguments that ran it."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    root = tmp_path_factory.mktemp("nothing_lost")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    args = ["compare", "--config", str(config), "--checkpoints", str(tiny_checkpoints),
            "--data-dir", str(mnist_dir), "--device", "cpu"]
    (root / "whole").mkdir()  # an empty folder is fine (CI makes results/ before compare)
    with pytest.warns(UserWarning):  # the dead tracking server's one warning
        assert main([*args, "--out", str(root / "whole")]) == 0
        for shard in ("0/2", "1/2"):
            assert main([*args, "--out", str(root / "sharded"), "--shard", shard]) == 0
    yield {"root": root, "compare": args, "ckpt": tiny_checkpoints, "mnist": mnist_dir}
    monkeypatch.undo()


def test_a_second_compare_into_a_finished_folder_keeps_the_first(places, capsys):
    whole = places["root"] / "whole"
    before = snapshot(whole)
    code = main([*places["compare"], "--out", str(whole)])
    assert_one_error(code, capsys.readouterr().err, f"{whole} holds an earlier run",
                     "results.jsonl", "--resume", "--overwrite")
    assert snapshot(whole) == before


def test_resume_and_overwrite_exclude_each_other(places, capsys):
    whole = places["root"] / "whole"
    code = main([*places["compare"], "--out", str(whole), "--resume", "--overwrite"])
    assert_one_error(code, capsys.readouterr().err, "--resume and --overwrite exclude")


def test_merge_refuses_to_write_into_a_shard_and_keeps_it(places, capsys):
    sharded = places["root"] / "sharded"
    shards = [str(sharded / "shard-0-of-2"), str(sharded / "shard-1-of-2")]
    before = snapshot(sharded)
    code = main(["merge", *shards, "--out", shards[0]])
    assert_one_error(code, capsys.readouterr().err, f"--out {shards[0]} is the shard",
                     "allowed: a folder outside every shard")
    assert snapshot(sharded) == before


def test_merge_stages_its_files_and_refuses_an_earlier_merge(places, capsys, tmp_path):
    sharded = tmp_path / "sharded"
    shutil.copytree(places["root"] / "sharded", sharded)
    shards = [str(sharded / "shard-0-of-2"), str(sharded / "shard-1-of-2")]
    assert main(["merge", *shards, "--out", str(sharded)]) == 0  # the shards' parent
    merged = snapshot(sharded)
    assert "results.jsonl" in merged and "shard-0-of-2/results.jsonl" in merged
    assert not [p for p in sharded.iterdir() if p.name.startswith(".")]  # no staging left
    capsys.readouterr()
    code = main(["merge", *shards, "--out", str(sharded)])
    err = assert_one_error(code, capsys.readouterr().err, "holds an earlier run", "--overwrite")
    assert "--resume" not in err  # merge has none
    assert snapshot(sharded) == merged
    assert main(["merge", *shards, "--out", str(sharded), "--overwrite"]) == 0
    assert snapshot(sharded)["results.jsonl"] == merged["results.jsonl"]


def test_a_compare_that_finds_no_earlier_run_and_overwrite_both_work(places, tmp_path):
    whole = tmp_path / "whole"
    shutil.copytree(places["root"] / "whole", whole)
    (whole / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning):
        assert main([*places["compare"], "--out", str(whole), "--overwrite"]) == 0
    assert (whole / "notes.txt").read_text() == "mine"
    assert len((whole / "results.jsonl").read_text().splitlines()) == 2


# -- non-finite outputs: a failure row, the other systems measured, exit 1 ----------------------


def test_a_non_finite_system_is_a_failure_row_and_the_run_goes_on(places, tmp_path, capsys):
    config = tmp_path / "nan.yaml"
    config.write_text(TINY.replace(
        "  - {space: pixel, sampler: ddim, steps: 2}",
        "  - {space: pixel, sampler: ddim, steps: 10, model: 'plugin_models:make_nan_model', "
        "name: NaN-DDIM}") + "match_snr: true\n")
    args = [*places["compare"][:2], str(config), *places["compare"][3:], "--out",
            str(tmp_path / "out")]
    with pytest.warns(UserWarning):
        code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: 1 system(s) failed") and "NaN-DDIM" in err[-1]
    rows = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r.get("failure")]
    assert [r["name"] for r in failed] == ["NaN-DDIM"]  # stopped: no equal-SNR row after it
    assert failed[0]["failure"] == "non-finite output"
    # DDIM-10 from t = 499 runs t = 499, 399, 299, 199: the network turns NaN below 200
    assert failed[0]["failure_step"] == 3 and failed[0]["failure_digits"] == [0, 1]
    others = [r for r in rows if not r.get("failure")]
    assert {r["name"] for r in others} == {"Euler-2"} and len(others) == 2  # both views
    markdown = (tmp_path / "out/results.md").read_text()
    assert "## Failed systems" in markdown and "| NaN-DDIM | equal_strength | 0.5 |" in markdown
    assert main(["report", str(tmp_path / "out")]) == 0  # the report shows it too
    assert "## Failed systems" in (tmp_path / "out/results.md").read_text()


# -- checkpoint metadata of the wrong shape: one error naming the file and the field -------------


@pytest.mark.parametrize("field, value, fragment", [
    (None, [1, 2], "a JSON list, not an object"),
    ("model_config", None, "metadata model_config: Input should be a valid dictionary"),
    ("stats", {}, "metadata stats.parameters: Field required"),
    ("train_seconds", "12", "metadata train_seconds: Input should be a valid number"),
    ("schedule", "linear", "metadata schedule: Input should be a valid dictionary"),
])
def test_malformed_checkpoint_metadata_is_one_error(field, value, fragment, places, tmp_path,
                                                    capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(places["ckpt"], folder)
    path = folder / "pixel.safetensors"
    tensors, metadata = load_checkpoint(path)
    save_checkpoint(path, tensors, value if field is None else {**metadata, field: value})
    with pytest.raises(InputError, match=f"{path}.*{fragment}"):
        load_model(path)
    before = snapshot(folder)
    code = main([*places["compare"], "--checkpoints", str(folder), "--out", str(tmp_path / "o")])
    assert_one_error(code, capsys.readouterr().err, str(path), fragment)
    assert snapshot(folder) == before


# -- report on a damaged results folder: one error naming the file ------------------------------


@pytest.mark.parametrize("damage, fragment", [
    (lambda out: _append(out, "{}"), "results.jsonl, line 3: a row without name"),
    (lambda out: _append(out, json.dumps({**_first(out), "mse": "oops"})),
     "results.jsonl, line 3: mse: Input should be a valid number"),
    (lambda out: _append(out, "[1, 2]"), "results.jsonl, line 3: a JSON list, not a row"),
    (lambda out: _truncate(out / "rows" / "1.safetensors"), "rows/1.safetensors cannot be read"),
    (lambda out: (out / "run.json").write_text("[]"), "run.json is not a run's identity"),
])
def test_report_on_a_damaged_run_is_one_error(damage, fragment, places, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(places["root"] / "whole", out)
    damage(out)
    before = snapshot(out)
    code = main(["report", str(out)])
    assert_one_error(code, capsys.readouterr().err, fragment)
    assert snapshot(out) == before


def _first(out: Path) -> dict:
    return json.loads((out / "results.jsonl").read_text().splitlines()[0])


def _append(out: Path, line: str) -> None:
    with (out / "results.jsonl").open("a") as file:
        file.write(line + "\n")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


# -- bad input found before any work: one error line, nothing written ---------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("yaml_text, fragments", [
    (BOMB, ["alias *a is not allowed", "line 2"]),
    ("steps: 3\nsteps: 4\n", ["key 'steps' is given twice", "line 2"]),
])
def test_yaml_aliases_and_repeated_keys_are_refused_at_once(yaml_text, fragments, tmp_path,
                                                           capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    start = time.perf_counter()
    code = main(["train", "pixel", "--config", str(path), "--out", str(tmp_path / "run")])
    assert time.perf_counter() - start < 5
    line = assert_one_error(code, capsys.readouterr().err, str(path), *fragments)
    assert len(line) < 400
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragments", [
    ("train pixel --out {tmp}/run --set name=/etc/evil", ["name: a checkpoint name is letters"]),
    ("train pixel --out {tmp}/run --set name=../x", ["name: a checkpoint name is letters"]),
    ("train pixel --out {tmp}/run --set steps=true", ["steps: Input should be a valid integer",
                                                      "(got True)"]),
    ("train pixel --out {tmp}/run --set lr=true", ["lr: Input should be a valid number"]),
    ("compare --out {tmp}/c --set systems.0.steps=true", ["systems.0.steps: Input should be a "
                                                         "valid integer"]),
    ("compare --out {tmp}/c --set num_images=1e11", ["num_images: Input should be a valid "
                                                     "integer"]),
    ("compare --out {tmp}/c --set num_images=5001", ["num_images: Input should be less than "
                                                     "or equal to 5000"]),
    ("compare --out {tmp}/c --num-images 100000000000", ["expected at most 5000 digits",
                                                         "held-out Frechet and KID reference"]),
    ("compare --out {tmp}/c --set systems.0.num_images=6000", ["less than or equal to 5000"]),
    ("evaluate --out {tmp}/e.json --num-images 5001", ["expected at most 5000 digits"]),
    ("evaluate --out {tmp}/e.json --generation-samples 100001", ["at most 10000 samples"]),
    ("evaluate --out {tmp}/e.json --sweep 2.0", ["--sweep: strength must be a number in (0, 1], "
                                                   "got 2.0"]),
    ("evaluate --out {tmp}/e.json --sweep 0.3 0.001", ["--sweep: strength 0.001 leaves no "
                                                         "denoising step"]),
    ("shapes {tmp} --out {tmp}/s.md --num-images 9000", ["expected at most 5000 digits"]),
])
def test_bad_values_are_one_error_before_any_work(args, fragments, tmp_path, capsys):
    start = time.perf_counter()
    code = main([word.format(tmp=tmp_path) for word in args.split()])
    assert time.perf_counter() - start < 30  # refused up front, not after minutes of work
    assert_one_error(code, capsys.readouterr().err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_num_images_above_the_reference_split_is_refused_from_python():
    with pytest.raises(InputError, match="less than or equal to 5000"):
        load_compare_config(None, ["num_images=5001"])


@pytest.mark.parametrize("command, existing", [
    ("evaluate --out {tmp}/e.json", ["e.json"]),
    ("shapes {tmp} --out {tmp}/s.md", ["s.json"]),
    ("train pixel --out {tmp}", ["pixel.safetensors"]),
])
def test_single_file_outputs_refuse_an_earlier_run(command, existing, tmp_path, capsys):
    for name in existing:
        (tmp_path / name).write_text("earlier")
    before = snapshot(tmp_path)
    code = main([word.format(tmp=tmp_path) for word in command.split()])
    assert_one_error(code, capsys.readouterr().err, "holds an earlier run", *existing,
                     "--overwrite")
    assert snapshot(tmp_path) == before


def test_train_writes_nothing_outside_its_out_folder(tmp_path, mnist_dir, monkeypatch):
    """The allowed name stays inside --out (the refused ones are above)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
            code = main(["train", "pixel", "--data-dir", str(mnist_dir), "--out", str(out),
                     "--device", "cpu", "--set", "train_images=8", "--batch-size", "4", "--set",
                     "steps=1",
                     "--set", "name=my.model-1", "--set", "model.base_channels=8"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "my.model-1.safetensors").is_file()


def test_exponent_numbers_are_numbers_not_strings():
    """YAML 1.1 reads ``1e-4`` as a string; configs read it as the number it is."""
    assert load_train_config("pixel", None, ["lr=1e-4", "time_budget_s=2E+1"]).lr == 1e-4
    with pytest.raises(InputError, match=r"num_images: Input should be a valid integer "
                                         r"\(got 100000000000.0\)"):
        load_compare_config(None, ["num_images=1e11"])

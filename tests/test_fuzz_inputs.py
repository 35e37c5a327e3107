"""Fuzzed bad input: configs (types, ranges, YAML aliases and repeated keys), checkpoint
metadata (each field of the wrong type), results folders (valid JSON that is not a row,
truncated tensor files) and the command line of every subcommand. Each draw works or raises
InputError (the CLI: exit 2 with one `error:` line); nothing else escapes, in bounded time and
memory. No draw samples digits: a valid command line stops at an empty checkpoints or data
folder, after everything the user typed has been checked."""

from __future__ import annotations

import json
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening import closed_port
from test_nothing_lost import TINY

from diffbench.cli import build_parser, main
from diffbench.compare import write_reports
from diffbench.core.errors import InputError
from diffbench.io.checkpoints import FACT_TYPES, load_checkpoint, load_model, save_checkpoint
from diffbench.io.config import (
    CompareConfig,
    SystemConfig,
    TrainConfig,
    load_compare_config,
    load_train_config,
    load_yaml,
)
from diffbench.results.rowstore import RowStore
from diffbench.systems.translate import Translator

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)
"""Values of every JSON/YAML type, in and out of range."""


def works_or_input_error(call) -> object:
    """``call()``'s result, or None when it raised InputError; anything else fails the test."""
    try:
        return call()
    except InputError:
        return None


# -- configs ----------------------------------------------------------------------------------


@FUZZ
@given(key=st.sampled_from(sorted(TrainConfig.model_fields)), value=WRONG)
def test_train_config_fields_of_any_type(key, value):
    config = works_or_input_error(lambda: load_train_config("pixel", None, [
        f"{key}={json.dumps(value)}"]))
    if config is not None:  # what passed has the declared types: no bool for an int
        assert not isinstance(config.steps, bool) and isinstance(config.steps, int)
        assert config.name is None or "/" not in config.name and ".." not in config.name


@FUZZ
@given(key=st.sampled_from([*sorted(CompareConfig.model_fields),
                            *(f"systems.0.{k}" for k in sorted(SystemConfig.model_fields))]),
       value=WRONG)
def test_compare_config_fields_of_any_type(key, value):
    config = works_or_input_error(lambda: load_compare_config(None, [
        f"{key}={json.dumps(value)}"]))
    if config is not None:
        assert type(config.num_images) is int and 1 <= config.num_images <= 5000
        assert all(type(s.steps) is int or s.steps is None for s in config.systems)


LINE = st.tuples(st.sampled_from(["steps", "lr", "seed", "name", "model"]),
                 st.sampled_from(["", "&a ", "&b "]),
                 st.sampled_from(["3", "0.1", "true", "*a", "*b", "[*a, *a]", "{x: 1}", "'s'"]))


@FUZZ
@given(lines=st.lists(LINE, min_size=1, max_size=8))
def test_yaml_with_aliases_and_repeated_keys_is_read_or_refused_in_bounded_memory(lines):
    text = "".join(f"{key}: {anchor}{value}\n" for key, anchor, value in lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        tracemalloc.start()
        try:
            raw = works_or_input_error(lambda: load_yaml(path))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2**20
    if raw is not None:  # read: then no alias and no key twice was in it
        assert "*" not in text and len({key for key, _, _ in lines}) == len(lines)
        assert raw == yaml.safe_load(text)


# -- checkpoint metadata ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_checkpoints):
    """A copy of the tiny checkpoints whose pixel UNet the draws rewrite, and its original."""
    folder = tmp_path_factory.mktemp("fuzz_ckpt")
    for name in ("pixel.safetensors",):
        shutil.copy(tiny_checkpoints / name, folder)
    return folder, load_checkpoint(folder / "pixel.safetensors")


@FUZZ
@given(key=st.one_of(st.none(), st.sampled_from(sorted(FACT_TYPES))), value=WRONG)
def test_checkpoint_metadata_fields_of_any_type(checkpoints, key, value):
    folder, (tensors, metadata) = checkpoints
    path = folder / "pixel.safetensors"
    save_checkpoint(path, tensors, value if key is None else {**metadata, key: value})
    works_or_input_error(lambda: load_model(path))
    works_or_input_error(lambda: Translator.from_checkpoints(folder, "pixel", "ddim", 2))


@FUZZ
@given(schedule=st.fixed_dictionaries({
    "name": st.sampled_from(["linear", "cosine", "quadratic", ""]),
    "num_timesteps": st.integers(-2, 3000)}))
def test_checkpoint_schedules_of_any_name_and_length(checkpoints, schedule):
    folder, (tensors, metadata) = checkpoints
    save_checkpoint(folder / "pixel.safetensors", tensors, {**metadata, "schedule": schedule})
    works_or_input_error(lambda: Translator.from_checkpoints(folder, "pixel", "ddim", 2))


# -- results folders --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_checkpoints, mnist_dir):
    """A finished tiny comparison."""
    root = tmp_path_factory.mktemp("fuzz_run")
    (root / "tiny.yaml").write_text(TINY)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    with pytest.warns(UserWarning):
        assert main(["compare", "--config", str(root / "tiny.yaml"), "--checkpoints",
                     str(tiny_checkpoints), "--data-dir", str(mnist_dir), "--device", "cpu",
                     "--out", str(root / "run")]) == 0
    monkeypatch.undo()
    return root / "run"


ROW_KEYS = ["name", "view", "strength", "seed", "num_images", "mse", "mse_ci95", "system_index",
            "schema_version", "preservation", "nfe", "failure", "failure_digits", "colour"]


@settings(FUZZ, max_examples=15)
@given(edits=st.lists(st.tuples(st.integers(0, 1), st.sampled_from(ROW_KEYS), WRONG),
                      max_size=3),
       line=st.one_of(st.none(), WRONG.map(json.dumps)),
       cut=st.one_of(st.none(), st.tuples(st.integers(0, 1), st.integers(0, 400))))
def test_results_folders_with_wrong_rows_and_truncated_tensors(finished, edits, line, cut):
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        shutil.copytree(finished, out)
        rows = [json.loads(text) for text in (out / "results.jsonl").read_text().splitlines()]
        for index, key, value in edits:
            rows[index][key] = value
        texts = [json.dumps(row) for row in rows] + ([line] if line is not None else [])
        (out / "results.jsonl").write_text("".join(f"{text}\n" for text in texts))
        if cut is not None:
            tensor = out / "rows" / f"{cut[0]}.safetensors"
            tensor.write_bytes(tensor.read_bytes()[: cut[1]])
        works_or_input_error(lambda: write_reports(RowStore.read(out), None, Path(folder) / "r"))


# -- the command line of every subcommand -----------------------------------------------------

TOKENS = ["0", "1", "-1", "3", "0.5", "2.0", "nan", "inf", "1e11", "100000000000", "true", "x",
          "../x", "/etc/evil", "steps=true", "num_images=5001", "name=../x", "strengths=[]",
          "seed=1.5", "cpu", "cuda", "pixel", "ddim", "quick", "0/2", "3/2"]


def command_lines(command: str) -> st.SearchStrategy[list[str]]:
    """Arguments for ``command``: its own options, each with a value from TOKENS or none."""
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions)  # noqa: SLF001 - argparse's API
    options = [o for action in sub.choices[command]._actions  # noqa: SLF001
               for o in action.option_strings if o not in ("-h", "--help")]
    pair = st.tuples(st.sampled_from(options), st.lists(st.sampled_from(TOKENS), max_size=2))
    return st.lists(pair, max_size=4).map(lambda pairs: [w for o, v in pairs for w in (o, *v)])


@pytest.fixture(scope="module")
def nowhere(tmp_path_factory):
    """An empty folder: no checkpoints, no MNIST, no shards (so no draw starts real work)."""
    return tmp_path_factory.mktemp("nowhere")


FIXED = {
    "demo": ["--data-dir", "{e}", "--out", "{e}/o"],
    "train": ["pixel", "--data-dir", "{e}", "--out", "{e}/o"],
    "evaluate": ["--checkpoints", "{e}", "--data-dir", "{e}", "--out", "{e}/o.json"],
    "compare": ["--checkpoints", "{e}", "--data-dir", "{e}", "--out", "{e}/o"],
    "shapes": ["{e}", "--checkpoints", "{e}", "--data-dir", "{e}", "--out", "{e}/o.md"],
    "report": ["{e}"],
    "merge": ["{e}", "--out", "{e}/o"],
    "history": ["--storage", "{e}", "--out", "{e}/h.png"],
}
"""What each draw's own arguments follow: folders that make a valid command line stop early.
(`ab`'s arguments are the regression gate's, fuzzed beside it.)"""


@pytest.mark.parametrize("command", sorted(FIXED))
def test_command_lines_of_every_subcommand(command, nowhere, monkeypatch):
    monkeypatch.setenv("DIFFBENCH_DATA_DIR", str(nowhere))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")

    @settings(FUZZ, max_examples=20)
    @given(extra=command_lines(command))
    def fuzz(extra):
        fixed = [word.format(e=nowhere) for word in FIXED[command]]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stderr", stderr := _Lines())
            code = main([command, *fixed, *extra])
        assert code == 2 or code == 0 and command in ("history",), (code, stderr.text)
        if code == 2:
            lines = stderr.text.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), stderr.text

    fuzz()


class _Lines:
    """A stderr that keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

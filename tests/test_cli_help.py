"""The command line's shared conventions: every ``--help`` answers without torch and gives each
option's default, one name per concept (old names hidden but accepted), ``--json`` for
scripts, ``-q``/``-v`` through the ``diffbench`` logger, and log lines above the progress bar."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from diffbench.cli import COMMANDS, build_parser, main
from diffbench.cli.common import DefaultsFormatter, configure_logging

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "mlflow")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, with its options."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_help_imports_no_torch_nor_mlflow(command):
    """``python -X importtime`` lists every module a ``--help`` imports: none is heavy."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffbench",
                           *command.split(), "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: diffbench")
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert {name for name in imported if name.split(".")[0] in HEAVY} == set()


def says_its_default(action: argparse.Action) -> bool:
    """The rule every option keeps: its help (as printed) says its default, or it is a switch
    (no value) whose help says what it does, or it is required."""
    if action.required:
        return True
    if not action.help:  # argparse prints nothing, not even the default
        return False
    return action.nargs == 0 or "default" in DefaultsFormatter("diffbench")._get_help_string(
        action)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_its_default(command):
    parser = commands()[command]
    shown = [a for a in parser._actions
             if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    assert [a.dest for a in shown if not a.option_strings and not a.help] == []
    assert [a.option_strings[0] for a in shown if a.option_strings
            and not says_its_default(a)] == []
    assert "%" not in parser.format_help().replace("%%", "")  # no unexpanded placeholder


def test_default_values_are_appended_once():
    parser = argparse.ArgumentParser(formatter_class=DefaultsFormatter)
    parser.add_argument("--a", type=int, default=3, help="a count")
    parser.add_argument("--b", default=7, help="b (default 7)")
    parser.add_argument("--c", nargs="+", default=["x", "y"], help="c")
    parser.add_argument("--d", default="5%", help="d")
    parser.add_argument("--e", action="store_true", help="e")
    text = " ".join(parser.format_help().split())
    assert "a count (default: 3)" in text and "b (default 7)" in text
    assert "default: x y" in text and "default: 5%" in text and text.count("default") == 4


def test_the_old_option_names_are_hidden_aliases():
    parsers = commands()
    report = parsers["report"].parse_args(["run", "--to", "elsewhere"])
    assert report.out == Path("elsewhere")
    assert parsers["ab"].parse_args(["--base", "HEAD", "--processes", "3"]).pairs == 3
    assert "--to" not in parsers["report"].format_help()
    assert "--processes" not in parsers["ab"].format_help()
    assert "--pairs P" in parsers["ab"].format_help()


def test_a_line_logged_under_an_open_bar_is_printed_above_it(capsys):
    """The bar is cleared, the line printed whole, the bar redrawn below it."""
    log = logging.getLogger("diffbench.compare")
    configure_logging(logging.INFO)
    with tqdm(total=3, desc="rows", file=sys.stderr) as bar:
        bar.update()
        log.info("DDIM-2 strength 0.5: a row")
        log.debug("not at INFO")
        bar.update()
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "a row" in line]
    assert line.split("\r")[-1] == "DDIM-2 strength 0.5: a row"
    assert "not at INFO" not in err
    configure_logging(logging.WARNING)
    log.info("quiet now")
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def compared(tiny_checkpoints, mnist_dir, tmp_path_factory):
    """A tiny comparison as JSON, and again quiet as the one shard of a run."""
    out = tmp_path_factory.mktemp("cli_json")
    args = ["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(out / "run"),
            "--data-dir", str(mnist_dir), "--num-images", "2", "--device", "cpu",
            "--strength", "0.5", "--set", "systems=[{space: pixel, sampler: ddim, steps: 2}]",
            "--set", "match_snr=false", "--set", "grid_images=2", "--set", "timing_batch=1",
            "--set", "repeats=1", "--set", "warmup=0", "--json"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db")
        loud = subprocess.run([sys.executable, "-m", "diffbench", *args], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        quiet = subprocess.run([sys.executable, "-m", "diffbench", "-q", *args[:4],
                                str(out / "quiet"), *args[5:], "--shard", "0/1"],
                               capture_output=True, text=True, cwd=REPO, timeout=300)
    return out, loud, quiet


def test_compare_json_is_one_object_and_its_rows_are_logged(compared):
    out, loud, _ = compared
    assert loud.returncode == 0, loud.stderr[-3000:]
    (line,) = loud.stdout.splitlines()
    result = json.loads(line)
    assert result["out"] == str(out / "run") and result["failed"] == []
    assert [(r["name"], r["strength"]) for r in result["rows"]] == [("DDIM-2", 0.5)]
    assert "results.md" in result["files"]
    rows = [line for line in loud.stderr.splitlines() if " s/image, mse " in line]
    assert len(rows) == 1 and rows[0].split("\r")[-1].strip().startswith("DDIM-2 strength 0.5")
    assert "1 rows planned: 0 on disk from before, 1 measured" in loud.stderr


def test_quiet_keeps_the_result_and_drops_the_info_lines(compared):
    _, _, quiet = compared
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    result = json.loads(quiet.stdout)
    assert result["rows"][0]["name"] == "DDIM-2" and result["out"].endswith("shard-0-of-1")
    assert "rows planned" not in quiet.stderr and " s/image, mse " not in quiet.stderr


def test_report_json_holds_the_rows_and_files(compared, capsys):
    out, _, _ = compared
    assert main(["report", str(out / "run"), "--out", str(out / "again"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 1 and result["results"][0]["name"] == "DDIM-2"
    assert str(out / "again" / "results.md") in result["files"]
    assert main(["report", str(out / "run"), "--out", str(out / "text")]) == 0
    assert capsys.readouterr().out.startswith("1 rows; wrote ")


def test_merge_json_holds_the_rows_and_files(compared, capsys):
    out, _, _ = compared
    assert main(["merge", str(out / "quiet" / "shard-0-of-1"), "--out", str(out / "merged"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 1 and result["shards"] == 1
    assert result["results"][0]["name"] == "DDIM-2"
    assert str(out / "merged" / "results.json") in result["files"]

"""The `diffbench` command: the demo job end to end, and bad input as one `error:` line."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from diffbench.cli import main


def test_demo_denoises_real_digits_and_writes_its_grid(mnist_dir, tmp_path, capsys):
    code = main(
        [
            "demo",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(tmp_path),
            "--num-images",
            "3",
            "--num-references",
            "2000",
            "--strength",
            "0.3",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"DDPM-1000", "DDIM-50"}
    assert rows["DDPM-1000"][2] == "300" and rows["DDIM-50"][2] == "15"
    # The optimal denoiser of 2000 real digits lands near the source at strength 0.3.
    assert all(float(row[4]) < 0.3 for row in rows.values())
    with Image.open(tmp_path / "demo_grid.png") as grid:
        # 4 rows of 3 digits (source, noised, DDPM, DDIM), 28 px each with 2 px padding.
        assert grid.size == (3 * 30 + 2, 4 * 30 + 2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffbench", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_strength_exits_2_with_one_error_line(mnist_dir, tmp_path):
    result = run_cli(
        "demo",
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path),
        "--num-images",
        "1",
        "--num-references",
        "10",
        "--strength",
        "1.5",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: strength must be a number in (0, 1], got 1.5"


def test_missing_data_dir_exits_2_naming_the_folder(tmp_path):
    result = run_cli("demo", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: MNIST not found in {tmp_path / 'nowhere'}")
    assert "Traceback" not in result.stderr


def test_bad_integer_option_is_an_argparse_error():
    result = run_cli("demo", "--num-images", "0")
    assert result.returncode == 2
    assert "error: argument --num-images: expected a positive integer, got 0" in result.stderr


def test_version_answers_without_a_command(capsys):
    from importlib.metadata import version

    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"diffbench {version('diffbench')}"


def test_list_names_every_registered_sampler_and_every_quick_case(capsys):
    import json

    from diffbench.gate.cases import QUICK
    from diffbench.sampling import SAMPLERS

    assert main(["list", "samplers", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == list(SAMPLERS)
    assert {row["name"]: row["reads"] for row in rows}["flow-euler"] == ["flow"]
    assert main(["list", "cases"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "kind", "quick"]
    assert {line.split()[0] for line in table[1:] if line.split()[2] == "True"} >= QUICK


def test_list_systems_names_a_comparisons_systems_as_it_will(capsys):
    """The default comparison's eleven systems, named as their rows will be."""
    import json

    assert main(["list", "systems", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == [
        "DDPM-1000", "DDIM-50", "DPM++2M-10", "LDM-DDIM-50", "LDM-DDPM-1000", "RF-Euler-10",
        "LDM-RF-Euler-10", "CM-1", "LDM-CM-1", "MF-1", "LDM-MF-1"]
    assert rows[7] == {"name": "CM-1", "space": "pixel", "network": "consistency",
                       "sampler": "consistency", "steps": 1}
    assert main(["list", "systems", "--config", "nowhere.yaml"]) == 2
    assert capsys.readouterr().err.startswith("error:")

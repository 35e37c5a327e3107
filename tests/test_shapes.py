"""The latent-shape sweep (`diffbench shapes`) on tiny random checkpoints: every number it
writes is the one the shared scoring code gives, and bad folders are one `error:` line."""

from __future__ import annotations

import json

import pytest

from diffbench import shapes
from diffbench.cli import main
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import load_digits, score_system
from diffbench.shapes import goals, markdown, run_sweep, write_sweep
from diffbench.systems.translate import Translator


@pytest.fixture(scope="module")
def sweep(tiny_checkpoints, mnist_dir):
    return run_sweep([tiny_checkpoints], tiny_checkpoints, num_images=6, rounds=2,
                     data_dir=str(mnist_dir))


def test_sweep_scores_each_shape_with_the_shared_scoring(sweep, tiny_checkpoints, mnist_dir):
    judge = Judge.from_checkpoints(tiny_checkpoints)
    digits = load_digits(judge, 6, str(mnist_dir))
    latent = Translator.from_checkpoints(tiny_checkpoints, "latent", "ddim")
    expected, _, _ = score_system(latent, judge, digits, 0.5, seed=0)
    (row,) = sweep.shapes
    assert row["fidelity"]["0.5"]["mse"] == pytest.approx(expected["mse"])
    assert row["fidelity"]["0.5"]["preservation"] == pytest.approx(expected["preservation"])
    assert row["noised_accuracy"]["0.3"]["noised_space"] == "latent"
    assert set(sweep.pixel["fidelity"]) == {"0.3", "0.5"}


def test_the_speedup_is_the_pixel_time_over_the_latent_time(tiny_checkpoints, mnist_dir,
                                                            monkeypatch):
    """With the timing stubbed to 0.3 s (pixel) and 0.1 s (latent) per image: 3x, by hand."""
    monkeypatch.setattr(shapes, "alternate_latency", lambda *args, **kwargs: (0.3, 0.1))
    result = run_sweep([tiny_checkpoints], tiny_checkpoints, num_images=2, rounds=1,
                       strengths=(0.3,), data_dir=str(mnist_dir))
    (row,) = result.shapes
    assert (row["pixel_sec_per_image"], row["sec_per_image"]) == (0.3, 0.1)
    assert row["speedup"] == pytest.approx(3.0)


def test_goals_compare_against_pixel_ddim(sweep):
    (row,) = sweep.shapes
    pixel = {"fidelity": {"0.3": {"preservation": 0.9, "mse": 0.04}}}
    close = {**row, "speedup": 3.0,
             "fidelity": {"0.3": {"preservation": 0.87, "mse": 0.06}}}
    assert goals(close, pixel) == {"preservation": True, "mse": True, "speed": True}
    far = {**row, "speedup": 2.9, "fidelity": {"0.3": {"preservation": 0.869, "mse": 0.0601}}}
    assert goals(far, pixel) == {"preservation": False, "mse": False, "speed": False}


def test_written_table_plot_and_json_agree(sweep, tmp_path):
    paths = write_sweep(sweep, tmp_path / "shapes.md")
    assert [p.name for p in paths] == ["shapes.md", "shapes.png", "shapes.json"]
    numbers = json.loads((tmp_path / "shapes.json").read_text())
    assert numbers["shapes"][0]["speedup"] == pytest.approx(sweep.shapes[0]["speedup"])
    table = markdown(sweep)
    assert table.count("| LDM-DDIM-50") == 1 and "| pixel DDIM-50" in table
    assert f"{sweep.shapes[0]['speedup']:.2f}x" in table
    assert (tmp_path / "shapes.png").stat().st_size > 0


def test_a_folder_without_a_shape_is_one_error_line(tmp_path, tiny_checkpoints, capsys):
    status = main(["shapes", str(tmp_path), "--checkpoints", str(tiny_checkpoints),
                   "--out", str(tmp_path / "out.md")])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "vae.safetensors" in err[0]
    assert main(["shapes", str(tiny_checkpoints), "--out", str(tmp_path / "x.txt")]) == 2

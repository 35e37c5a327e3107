"""``diffbench history``: saved pytest-benchmark runs ordered by commit, a planted step found as
one change point, a flat series with noise found as none, and the PNG written."""

from __future__ import annotations

import json
import random

from diffbench.cli import main
from diffbench.gate.history import change_points, load_history


def save_run(folder, number, commit, when, medians):
    data = {"commit_info": {"id": commit * 5, "time": when, "dirty": False},
            "datetime": when,
            "benchmarks": [{"fullname": name, "stats": {"median": m}}
                           for name, m in medians.items()]}
    (folder / f"{number:04d}_{commit}.json").write_text(json.dumps(data))


def test_a_step_is_one_change_point_and_noise_is_none():
    rng = random.Random(0)
    flat = [0.1 * (1 + rng.gauss(0, 0.02)) for _ in range(12)]
    stepped = [0.1 * (1 + rng.gauss(0, 0.02)) * (1.3 if i >= 7 else 1) for i in range(12)]
    assert change_points(flat) == []
    assert change_points(stepped) == [7]
    assert change_points([0.1, 0.2, 0.1]) == []  # too short to split


def test_history_orders_runs_by_commit_time_and_draws_a_png(tmp_path):
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    times = [f"2026-11-{day:02d}T10:00:00+00:00" for day in range(1, 9)]
    for i, when in enumerate(times):
        slow = 1.3 if i >= 4 else 1.0
        # saved out of order: the history must sort them by commit time
        save_run(storage, 8 - i, f"c{i}", when, {"benches/a.py::test_x": 0.1 * slow,
                                                 "benches/b.py::test_y": 0.2})
    series = load_history(tmp_path / ".benchmarks")
    assert series["benches/a.py::test_x"].labels[:2] == ["c0c0c0c0", "c1c1c1c1"]
    assert change_points(series["benches/a.py::test_x"].medians) == [4]
    assert change_points(series["benches/b.py::test_y"].medians) == []
    out = tmp_path / "history.png"
    assert main(["history", "--storage", str(tmp_path / ".benchmarks"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_saved_runs_is_one_error_line(tmp_path, capsys):
    assert main(["history", "--storage", str(tmp_path), "--out", str(tmp_path / "h.png")]) == 2
    assert capsys.readouterr().err.startswith("error: no saved benchmark runs under")

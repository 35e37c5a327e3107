"""Instruction counting's pieces that run without valgrind: the callgrind requests compile and
are no-ops outside valgrind, and a count is read from callgrind's ``totals:`` line."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from diffbench import counts


@pytest.mark.skipif(not counts.available(), reason="needs valgrind and cc")
def test_the_requests_compile_and_do_nothing_natively(tmp_path):
    library = ctypes.CDLL(str(counts.toggles_library(tmp_path)))
    library.diffbench_count_start()  # outside valgrind a client request is a few no-op insns
    library.diffbench_count_stop()


def test_a_count_is_read_from_the_last_nonzero_dump(tmp_path):
    out = tmp_path / "run.out"
    out.write_text("summary: 0\ntotals: 0\n")  # the dump at exit, after the counted call
    (tmp_path / "run.out.1").write_text("events: Ir\nsummary: 0\ntotals: 596851421\n")
    process = subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE,
                               text=True)
    assert counts.finish_count(process, out) == 596851421


def test_a_failed_count_names_the_exit_status(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('boom')"],
                               stderr=subprocess.PIPE, text=True)
    with pytest.raises(RuntimeError, match="callgrind count failed \\(exit 1\\): boom"):
        counts.finish_count(process, tmp_path / "missing.out")

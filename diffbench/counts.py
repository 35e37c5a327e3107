"""Instruction counts of one call under valgrind's callgrind: a signal that does not drift.

Wall time on a shared machine moves with its neighbours; the number of instructions a call
executes does not (for the same binary, inputs and thread count). The worker
(:mod:`diffbench.ab_worker` with ``--count``) runs under ``valgrind --tool=callgrind
--instr-atstart=no``, makes one untimed call, and brackets one more with callgrind's
``CALLGRIND_START_INSTRUMENTATION`` / ``CALLGRIND_STOP_INSTRUMENTATION`` client requests, so
importing torch is not instrumented. The requests are C macros from ``valgrind/callgrind.h``,
compiled once into a tiny shared library (PyTorch's ``Timer.collect_callgrind`` does the same
through its own bindings, but instruments the whole interpreter start).

Under valgrind a call runs about 50x slower and starting torch takes about a minute, so counts
are opt-in (``diffbench ab --counts``), measured on a batch-1 sampler loop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from diffbench.errors import InputError

TOGGLES = """#include <valgrind/callgrind.h>
void diffbench_count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void diffbench_count_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS; }
"""
COUNT_LIMIT = 0.01
"""A head that executes more than 1% more instructions than its base counts as slower (counts
of one call repeat within 0.05% on one machine: ``docs/regression_gate.md``)."""
COUNT_CASE = "img2img-pixel-ddim-50-s0.3-b1"


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("cc") is not None


def toggles_library(folder: Path) -> Path:
    """Compile the start/stop requests into ``folder/libdiffbench_count.so``."""
    source, library = folder / "count_toggles.c", folder / "libdiffbench_count.so"
    source.write_text(TOGGLES)
    result = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(f"cannot compile callgrind's requests (valgrind/callgrind.h is needed; "
                         f"Debian: apt-get install valgrind): {result.stderr.strip()}")
    return library


def start_count(worker_args: list[str], library: Path, out: Path, case: str,
                env: dict[str, str]) -> subprocess.Popen:
    """Start one counting worker; :func:`finish_count` reads its total."""
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}", sys.executable, *worker_args,
               "--count", case, "--callgrind-lib", str(library)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)


def finish_count(process: subprocess.Popen, out: Path) -> int:
    """The instructions of the counted call: the ``totals:`` line of the dump it wrote."""
    _, stderr = process.communicate()
    dumps = sorted(out.parent.glob(out.name + ".*"))
    totals = [int(m.group(1)) for path in dumps
              for m in [re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)]
              if m and int(m.group(1)) > 0]
    if process.returncode != 0 or not totals:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"callgrind count failed (exit {process.returncode}): {tail}")
    return totals[-1]


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="diffbench-count-"))

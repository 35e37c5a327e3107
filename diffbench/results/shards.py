"""Splitting a comparison across processes or machines: ``--shard I/N`` and ``diffbench merge``.

A shard takes whole systems (a system's rows depend on each other: its equal-SNR rows reuse its
equal-strength ones), assigned by longest-processing-time-first on their expected cost, the
network evaluations times the digits of all their rows (Graham 1969), so the shards finish at
about the same time; the assignment depends only on the config, so every shard computes the
same one. Shard I of N writes into ``<out>/shard-I-of-N``; ``diffbench merge`` joins the shards
into one result set after checking they are shards of one run.

The shard defaults come from the launcher's environment: torchrun's ``RANK`` / ``WORLD_SIZE``,
a SLURM array's ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (less
``SLURM_ARRAY_TASK_MIN``), and a Kubernetes indexed job's ``JOB_COMPLETION_INDEX`` with the job's
``completions`` passed as ``JOB_COMPLETIONS``. Shards that share a machine mark their rows
``shared_machine``: their timings ran beside each other, their fidelity is unaffected. A shard
knows from torchrun's ``LOCAL_WORLD_SIZE`` > 1, and, whatever launched it (a SLURM array's
tasks on one node, two ``--shard`` commands by hand), from :class:`Neighbours`: every shard of a
run registers its process in the host's temporary folder while it runs, and a row measured
while another live shard of the same run was registered is flagged.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from diffbench.core.errors import InputError

SHARD_PATTERN = re.compile(r"^(\d+)/(\d+)$")
LAUNCHERS = (
    ("RANK", "WORLD_SIZE", None),  # torchrun
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),  # SLURM arrays
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", None),  # Kubernetes indexed jobs
)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    match = SHARD_PATTERN.match(text.strip())
    if not match or not int(match[1]) < int(match[2]):
        raise InputError(f"--shard must be I/N with 0 <= I < N, got {text!r}")
    return int(match[1]), int(match[2])


def shard_from_env(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """The shard a launcher's environment names, or None (one process: no shards)."""
    for index_key, count_key, offset_key in LAUNCHERS:
        if index_key in environ and count_key in environ:
            offset = int(environ.get(offset_key, 0)) if offset_key else 0
            shard = int(environ[index_key]) - offset, int(environ[count_key])
            if shard[1] <= 1:
                return None
            return parse_shard(f"{shard[0]}/{shard[1]}")
    return None


def shares_machine(environ: Mapping[str, str]) -> bool:
    """Whether this process's shard runs beside others on one machine (torchrun's
    ``LOCAL_WORLD_SIZE`` > 1)."""
    return int(environ.get("LOCAL_WORLD_SIZE", 1)) > 1


def assign(costs: Sequence[float], count: int) -> list[int]:
    """The shard of each item: longest processing time first, ties to the lower index."""
    loads = [0.0] * count
    owner = [0] * len(costs)
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        shard = min(range(count), key=lambda s: (loads[s], s))
        owner[item] = shard
        loads[shard] += costs[item]
    return owner


def shard_dir(out: str | Path, shard: tuple[int, int]) -> Path:
    return Path(out) / f"shard-{shard[0]}-of-{shard[1]}"


class Neighbours:
    """The other live shards of one run on this host. Each registers a file named by its
    process id in ``<tmp>/diffbench-shards/<run>/`` for as long as it runs (``run``: the same
    for every shard of a comparison, e.g. a digest of its config); :meth:`busy` says whether
    any other registered process is alive now. A stale file (its process gone) does not count."""

    def __init__(self, run: str, root: str | Path | None = None) -> None:
        self.folder = Path(root or tempfile.gettempdir()) / "diffbench-shards" / run
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mine = self.folder / str(os.getpid())
        self.mine.touch()

    def busy(self) -> bool:
        """Whether another shard of the run is alive on this host."""
        for path in self.folder.iterdir():
            if path == self.mine or not path.name.isdigit():
                continue
            try:
                os.kill(int(path.name), 0)  # signal 0: is it alive?
            except ProcessLookupError:
                continue
            except PermissionError:
                pass  # alive, another user's
            return True
        return False

    def close(self) -> None:
        self.mine.unlink(missing_ok=True)

    def __enter__(self) -> Neighbours:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

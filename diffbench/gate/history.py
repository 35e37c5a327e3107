"""Each benchmark's median over commits, from pytest-benchmark's saved runs, with change points.

Every run saved with ``--benchmark-autosave`` (``nox -s benches``, ``benches-quick``) lands in
``.benchmarks/<machine>/NNNN_<commit>_<date>.json`` with pytest-benchmark's ``commit_info`` (id,
time, dirty). :func:`load_history` orders the runs by commit time, then by when they ran, and
keeps each case's median; :func:`change_points` finds shifts in its log-median with PELT
(Killick, Fearnhead & Eckley 2012, "Optimal detection of changepoints with a linear
computational cost") from ``ruptures``, penalised like BIC (``2 * sigma^2 * ln n``, ``sigma``
from the median absolute difference of neighbours, so one outlier is no step), as asv's step
detection does over its history.

Saved runs come from whatever machine wrote them: a shift can be a commit or a machine, which is
why each point is labelled with its commit and the gate CI enforces is ``diffbench ab``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from diffbench.core.errors import InputError

MIN_SEGMENT = 2  # a step needs two runs on each side


@dataclass
class Series:
    case: str
    labels: list[str] = field(default_factory=list)  # commit id (short), "+" when dirty
    medians: list[float] = field(default_factory=list)  # seconds


def load_history(storage: Path, match: str | None = None) -> dict[str, Series]:
    """Case full name -> its medians over the saved runs under ``storage``, in commit order."""
    files = sorted(Path(storage).glob("**/*.json"))
    runs = []
    for path in files:
        try:
            data = json.loads(path.read_text())
            commit = data.get("commit_info") or {}
            runs.append((commit.get("time") or "", data.get("datetime") or "", commit, data))
        except (OSError, ValueError):
            continue  # a half-written or foreign file is not a run
    if not runs:
        raise InputError(f"no saved benchmark runs under {storage}; save some with "
                         f"`pytest benches/ --benchmark-autosave` (nox -s benches)")
    runs.sort(key=lambda run: (run[0], run[1]))
    series: dict[str, Series] = {}
    for _, _, commit, data in runs:
        label = (commit.get("id") or "unknown")[:8] + ("+" if commit.get("dirty") else "")
        for bench in data.get("benchmarks", []):
            name = bench.get("fullname", "")
            median = (bench.get("stats") or {}).get("median")
            if match and match not in name or not isinstance(median, int | float):
                continue
            entry = series.setdefault(name, Series(name))
            entry.labels.append(label)
            entry.medians.append(float(median))
    if not series:
        raise InputError(f"no benchmark in {storage} matches {match!r}")
    return series


def change_points(medians: list[float]) -> list[int]:
    """Indices where a new level starts (PELT on the log-medians, BIC-like penalty)."""
    import numpy as np
    import ruptures

    n = len(medians)
    if n < 2 * MIN_SEGMENT:
        return []
    signal = np.log(np.asarray(medians, dtype=float)).reshape(-1, 1)
    differences = np.abs(np.diff(signal[:, 0]))
    sigma = 1.4826 * float(np.median(differences)) / math.sqrt(2)
    sigma = max(sigma, 0.01)  # runs of identical medians: a 1% floor, not zero
    penalty = 2 * sigma**2 * math.log(n)
    ends = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(signal).predict(pen=penalty)
    return [end for end in ends if end < n]


def draw_history(series: dict[str, Series], out: Path, columns: int = 3) -> Path:
    """One panel per case: median seconds per saved run, dashed lines at change points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(series)
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        s = series[name]
        x = range(len(s.medians))
        ax.plot(x, [m * 1e3 for m in s.medians], "o-", ms=3)
        for point in change_points(s.medians):
            ax.axvline(point - 0.5, color="tab:red", ls="--", lw=1)
        ax.set_title(name.split("::")[-1], fontsize=8)
        ax.set_ylabel("median ms")
        ax.set_xticks(list(x), s.labels, rotation=90, fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("benchmark medians over saved runs (red: change points, PELT)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

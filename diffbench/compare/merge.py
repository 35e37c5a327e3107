"""``diffbench merge``: the shards of one comparison joined into one result set, in the
comparison's system order, with its reports (:mod:`diffbench.results.shards`)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffbench.compare.rows import table_columns
from diffbench.core.errors import InputError
from diffbench.core.outputs import publish, staging_dir
from diffbench.results.mlflow_runs import log_merged
from diffbench.results.results_files import FRECHET_REFERENCE, GRID_INPUTS, write_reports
from diffbench.results.rowstore import RowStore, first_difference


def merge(dirs: Sequence[str | Path], out: str | Path,
          overwrite: bool = False) -> tuple[list[dict[str, Any]], list[Path]]:
    """Join the shards of one comparison (``diffbench merge``) into ``out``, rows in the
    comparison's system order, then its reports; shards of different runs (config, seed,
    digits or checkpoints) or a missing or repeated shard are refused, naming the difference.
    ``out`` may not be (inside) a shard; an earlier run there is replaced only with
    ``overwrite``. The merge is built in a staging folder and moved into ``out`` when done,
    then logged to MLflow as one comparison (:func:`~diffbench.results.mlflow_runs.log_merged`)."""
    check_merge_target(dirs, out)
    RowStore.claim(out, overwrite=overwrite, resumable=False)
    stores = [RowStore.read(d) for d in dirs]
    runs = [store.run() for store in stores]
    own = ("shard", "planned", "environment")  # each shard's; the merge plans every shard's rows
    base = {k: v for k, v in runs[0].items() if k not in own}
    for directory, run in zip(dirs, runs):
        if "shard" not in run:
            raise InputError(f"{directory} is not a shard (it was run without --shard)")
        difference = first_difference(base, {k: v for k, v in run.items() if k not in own})
        if difference:
            raise InputError(f"{directory} is a shard of another run than {dirs[0]}: "
                             f"{difference}")
    count = runs[0]["shard"][1]
    found = sorted(run["shard"][0] for run in runs)
    if found != list(range(count)) or any(run["shard"][1] != count for run in runs):
        given = ", ".join(f"{run['shard'][0]}/{run['shard'][1]}" for run in runs)
        raise InputError(f"merge needs shards 0..{count - 1} of {count} once each, got {given}")
    staged = staging_dir(out)
    try:
        planned = [row for run in sorted(runs, key=lambda run: run["shard"][0])
                   for row in run.get("planned", [])]
        merged = RowStore.open(staged, {**base, "planned": planned}, resume=False)
        order = sorted((row["system_index"], position, i)
                       for position, store in enumerate(stores)
                       for i, row in enumerate(store.rows()))
        for _, position, i in order:
            merged.append(stores[position].row(i), stores[position].tensors(i))
        first = min(range(len(stores)), key=lambda p: min(
            (r["system_index"] for r in stores[p].rows()), default=len(order) + 1))
        for extra in (GRID_INPUTS, FRECHET_REFERENCE):
            merged.save_extra(extra, *stores[first].load_extra(extra))
        results, files = write_reports(merged)
        publish(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # a failed merge leaves nothing behind
    files = [Path(out) / path.relative_to(staged) for path in files]
    log_merged(out, dirs, base, results, files, table_columns(results))
    return results, files


def check_merge_target(dirs: Sequence[str | Path], out: str | Path) -> None:
    """Refuse an ``out`` that is one of the shards ``dirs`` or inside one (it would be
    written over what it reads)."""
    target = Path(out).resolve()
    for directory in dirs:
        source = Path(directory).resolve()
        if target == source or target.is_relative_to(source):
            raise InputError(f"--out {out} is the shard {directory} or inside it; allowed: a "
                             f"folder outside every shard (e.g. the shards' parent)")

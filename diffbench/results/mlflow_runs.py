"""How a comparison lays out its MLflow runs (docs/mlflow.md), over :mod:`.tracking`.

* A comparison is one parent run, ``compare <folder> <digest8>``; its id is written first to
  ``<out>/mlflow_run.json`` (:data:`RUN_FILE`), so ``--resume`` continues that run. Each row is
  a nested run tagged ``diffbench.row`` (a digest of its key,
  :func:`~diffbench.results.rowstore.row_key`): what ran as params, its figures and their 95%
  intervals as metrics (:func:`~diffbench.results.row.metrics_of`: ``mse_ci95_lo``, ...), its
  verdicts as tags (:func:`~diffbench.results.row.tags_of`). A resume logs only the rows the
  parent lacks; the paired figures, known once every row is, reach each row's run at the end.
* A shard's parent run is named ``... shard I/N``. ``diffbench merge`` logs the merged
  comparison as one parent run with every row nested, tagged ``diffbench.shard_runs``; each
  shard run found in the store is nested under it and tagged ``diffbench.merged_into``, so the
  experiment's top level shows one comparison.
* The digits are an MLflow dataset input (``mnist-test``, ``mnist-train``): its source the
  MNIST folder, its digest the sha256 of the files read and how many digits were used.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffbench.core.files import sha256_file, write_atomic_text
from diffbench.io.data import mnist_files
from diffbench.results.row import PARAMS, metrics_of, tags_of
from diffbench.results.rowstore import row_key
from diffbench.results.tracking import Tracker, TrackingWarning, start_run

RUN_FILE = "mlflow_run.json"
ROW_TAG, SHARD_RUNS_TAG, MERGED_INTO_TAG = ("diffbench.row", "diffbench.shard_runs",
                                            "diffbench.merged_into")
PARENT_TAG = "mlflow.parentRunId"


def parent_run_name(folder: str | Path, digest: str, part: str = "") -> str:
    """A comparison's parent run name: ``compare <folder name> <digest8>[ <part>]``."""
    return f"compare {Path(folder).name} {digest[:8]}{f' {part}' if part else ''}"


def save_run(out: str | Path, tracker: Tracker, config_digest: str) -> None:
    """Record the tracker's run in ``out/mlflow_run.json`` (nothing when tracking is off)."""
    if tracker.run_id is not None:
        write_atomic_text(Path(out) / RUN_FILE, json.dumps({
            "run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
            "experiment": tracker.experiment, "tracking_uri": tracker.tracking_uri,
            "config_digest": config_digest}) + "\n")


def saved_run(out: str | Path) -> dict[str, Any]:
    """The run ``out/mlflow_run.json`` records; ``{}`` when none (or unreadable)."""
    try:
        found = json.loads((Path(out) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def forget_run(out: str | Path) -> None:
    """Drop ``out/mlflow_run.json``: the next run there is a new one."""
    (Path(out) / RUN_FILE).unlink(missing_ok=True)


def row_tag(row: Mapping[str, Any]) -> str:
    """The ``diffbench.row`` tag of a row's run: a digest of its key."""
    return hashlib.sha256(row_key(dict(row)).encode()).hexdigest()[:20]


def row_runs(parent: Tracker) -> dict[str, str]:
    """``diffbench.row`` tag -> run id of the parent's nested row runs already logged; one
    a kill left unfinished (half logged) is deleted, to be logged again."""
    found: dict[str, str] = {}
    token = None
    while parent.run_id is not None:
        page = parent.request("search_runs", [parent.experiment_id], max_results=1000,
                              filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'",
                              page_token=token)
        for run in page or []:
            if run.info.status != "FINISHED":
                parent.request("delete_run", run.info.run_id)
            elif ROW_TAG in run.data.tags:
                found[run.data.tags[ROW_TAG]] = run.info.run_id
        token = page.token if page else None
        if not token:
            break
    return found


def log_row(parent: Tracker, row: dict[str, Any], logged: dict[str, str]) -> None:
    """One nested run under ``parent`` for ``row``, unless ``logged`` (tag -> run id) has it;
    it is added there. A no-op when tracking is off."""
    tag = row_tag(row)
    if not parent.enabled or tag in logged:
        return
    params = {k: row[k] for k in PARAMS if k in row}
    with start_run(parent.experiment, run_name=f"{row['name']} {row['view']} "
                   f"s{row['strength']:g}", params=params, nested=True,
                   tags={ROW_TAG: tag, **tags_of(row)}) as sub:
        sub.log_metrics(metrics_of(row))
    if sub.run_id is not None:
        logged[tag] = sub.run_id


def log_verdicts(parent: Tracker, results: Sequence[dict[str, Any]],
                 logged: dict[str, str]) -> None:
    """The paired figures (``*_vs_reference`` and their intervals) as metrics and the verdicts
    as tags, on each row's run: known once every row is."""
    for row in results:
        paired = {k: v for k, v in metrics_of(row).items() if "_vs_reference" in k}
        if row_tag(row) in logged and (paired or tags_of(row)):
            run = parent.other(logged[row_tag(row)])
            run.log_metrics(paired)
            run.set_tags(tags_of(row))


def log_dataset(tracker: Tracker, name: str, split: str, data_dir: str | None,
                count: int | None, context: str) -> None:
    """The MNIST ``split`` read from ``data_dir`` (its first ``count`` digits) as the dataset
    input ``name`` of the run, in ``context`` (``evaluation``, ``training``)."""
    if not tracker.enabled:
        return
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource  # mlflow.data registers it
    from mlflow.entities import DatasetInput, InputTag

    files = sorted(mnist_files(split, data_dir, count))
    digest = hashlib.sha256(json.dumps([sha256_file(f) for f in files] + [count]).encode())
    try:
        source = LocalArtifactDatasetSource(Path(files[0]).parent.resolve().as_uri())
        dataset = MetaDataset(source, name=name, digest=digest.hexdigest()[:16])._to_mlflow_entity()
    except Exception as err:  # noqa: BLE001 - a tracking failure must not stop the work
        warnings.warn(f"MLflow dataset {name} not logged ({err})", TrackingWarning, stacklevel=2)
        return
    tags = [InputTag("mlflow.data.context", context), InputTag("digits", str(count or "all"))]
    tracker.log_inputs([DatasetInput(dataset, tags)])


def log_merged(out: str | Path, shard_dirs: Sequence[str | Path], identity: dict[str, Any],
               results: list[dict[str, Any]], files: Sequence[Path],
               table: dict[str, list[Any]]) -> None:
    """``diffbench merge``'s run (see the module): one parent run of every row, its reports as
    artifacts, the shard runs nested under it."""
    shards = [saved_run(d) for d in shard_dirs]
    ids = [s["run_id"] for s in shards if s.get("run_id")]
    experiment = next((s["experiment"] for s in shards if s.get("experiment")),
                      "diffbench-compare")
    digest = next((s["config_digest"] for s in shards if s.get("config_digest")), None)
    digest = digest or hashlib.sha256(json.dumps(identity, sort_keys=True, default=str)
                                      .encode()).hexdigest()
    with start_run(experiment, params=identity, tags={SHARD_RUNS_TAG: ",".join(ids)},
                   run_name=parent_run_name(out, digest, "merged")) as run:
        save_run(out, run, digest)
        found = [r for r in (run.find_run(i, run.experiment_id) for i in ids) if r is not None]
        if found:  # the shards' tags (config digest, commit, machine) and dataset inputs
            run.set_tags({k: v for k, v in found[0].data.tags.items()
                          if not k.startswith(("mlflow.", "diffbench."))})
            run.log_inputs(found[0].inputs.dataset_inputs)
        logged: dict[str, str] = {}
        for row in results:
            log_row(run, row, logged)
        for path in files:
            run.log_artifact(path)
        run.log_table(table, "results_table.json")
        for shard in found:
            run.other(shard.info.run_id).set_tags({PARENT_TAG: run.run_id,
                                                    MERGED_INTO_TAG: run.run_id})

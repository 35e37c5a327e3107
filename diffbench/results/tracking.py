"""MLflow run tracking that never stops the caller's work (`time_execution`: :mod:`.timing`).

The store (`tracking_uri`): ``MLFLOW_TRACKING_URI`` when set (e.g. ``http://127.0.0.1:5000``
for a real ``mlflow server``). Else, with mlflow-skinny (diffbench's dependency: no SQLAlchemy,
so no MLflow 3.x default ``sqlite:///mlflow.db``), the file store ``./mlruns`` in the working
directory; with the full MLflow (the ``ui`` or ``dev`` extra) MLflow's default: that SQLite
file, or ``./mlruns`` where it already holds runs. MLflow 3.x refuses a file store unless
``MLFLOW_ALLOW_FILE_STORE=true``: set for the process when the default is one; browse it with
``MLFLOW_ALLOW_FILE_STORE=true mlflow ui`` in that folder.

If tracking fails (server down, bad URI, any MLflow error) the `Tracker` emits one
`TrackingWarning` naming the URI and the error, becomes disabled, and later calls do nothing.
A run is continued by its id (``start_run(run_id=...)``: a resumed job's), else created.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from diffbench.results.timing import ACTIVE
from diffbench.results.timing import reset_timings as reset_timings  # they lived here:
from diffbench.results.timing import time_execution as time_execution  # still importable
from diffbench.results.timing import timings as timings  # from here

_METRIC_CHARS = re.compile(r"[^\w\-. :/]")  # what MLflow does not allow in a metric name

PROBE_TIMEOUT_S = 5.0
# MLflow retries HTTP requests 7 times with exponential backoff and a 120 s timeout by default:
# minutes against a dead server. While a run is open these bounds apply unless already set.
_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"


class TrackingWarning(UserWarning):
    """MLflow tracking failed and was disabled; the work itself goes on."""


def flatten_dict(d: Mapping[Any, Any], sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings: ``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}{sep}{k}": v for k, v in flatten_dict(value, sep).items()})
        else:
            flat[str(key)] = value
    return flat


def _has_sqlalchemy() -> bool:
    return importlib.util.find_spec("sqlalchemy") is not None


def tracking_uri() -> str:
    """MLflow's tracking URI; with none set and no SQLAlchemy, ``./mlruns`` (set for the
    process), and a default file store allowed (see the module docstring)."""
    if mlflow.is_tracking_uri_set():
        return mlflow.get_tracking_uri()
    if not _has_sqlalchemy():
        mlflow.set_tracking_uri(Path.cwd().joinpath("mlruns").as_uri())
    uri = mlflow.get_tracking_uri()
    if urlsplit(uri).scheme in ("", "file"):
        os.environ.setdefault(ALLOW_FILE_STORE, "true")
    return uri


def _probe(uri: str) -> None:
    """Raise quickly if an HTTP tracking server does not answer at all (any HTTP status will do)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).close()


@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    """Set the `_HTTP_BOUNDS` variables that are not already set, for the duration."""
    added = [name for name in _HTTP_BOUNDS if name not in os.environ]
    os.environ.update({name: _HTTP_BOUNDS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _caller_stacklevel() -> int:
    """The `warnings.warn` stacklevel of the first frame outside this module and contextlib."""
    frame, level = sys._getframe(1), 1
    while frame.f_back and frame.f_code.co_filename in (__file__, contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return level


class Tracker:
    """One MLflow run; every method is a no-op once tracking is disabled."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.enabled = False
        self._run_id: str | None = None
        self._client: MlflowClient | None = None
        self._warned = False
        self._timing_steps: dict[str, int] = {}
        self._logged_params: set[str] = set()  # a continued run's: kept, not logged again
        self.experiment_id: str | None = None
        self.experiment: str | None = None

    @property
    def run_id(self) -> str | None:
        """The MLflow run id, None when tracking is disabled."""
        return self._run_id if self.enabled else None

    def _disable(self, err: BaseException) -> None:
        if not self._warned:
            warnings.warn(
                f"MLflow tracking at {self.tracking_uri!r} failed ({type(err).__name__}: "
                f"{str(err)[:500]}); tracking is disabled for this run, the work goes on",
                TrackingWarning,
                stacklevel=_caller_stacklevel(),
            )
            self._warned = True
        self.enabled = False

    def request(self, client_method: str, *args: Any, **kwargs: Any) -> Any:
        """``MlflowClient.<client_method>(...)``'s answer; None when disabled or when it fails
        (which disables tracking, as any failure here does). Never raises."""
        if not self.enabled:
            return None
        try:
            return getattr(self._client, client_method)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a tracking failure must not stop the work
            self._disable(err)
            return None

    def _call(self, client_method: str, *args: Any, **kwargs: Any) -> None:
        """Call ``MlflowClient.<client_method>(run_id, ...)`` unless disabled; never raises."""
        self.request(client_method, self._run_id, *args, **kwargs)

    def _open(
        self, experiment: str, run_name: str | None, tags: dict[str, Any], nested: bool,
        log_system_metrics: bool = False, run_id: str | None = None,
    ) -> None:
        try:
            _probe(self.tracking_uri)
            self._client = MlflowClient(self.tracking_uri)
            found = self._client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self._client.create_experiment(experiment)
            earlier = self.find_run(run_id, exp_id)
            run = mlflow.start_run(
                run_id=earlier.info.run_id if earlier else None,
                experiment_id=None if earlier else exp_id,
                run_name=run_name,
                nested=nested,
                tags={str(k): str(v) for k, v in tags.items()},
                log_system_metrics=log_system_metrics,
            )
        except Exception as err:  # noqa: BLE001 - a tracking failure must not stop the work
            self._disable(err)
            return
        self._run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        self.experiment = experiment
        self._logged_params = set(earlier.data.params) if earlier else set()
        self.enabled = True

    def find_run(self, run_id: str | None, experiment_id: str | None) -> Any:
        """The run ``run_id`` when this store holds it, live, in ``experiment_id``; else None
        (another store, deleted: not a failure; a resume starts a new run)."""
        if not run_id or self._client is None:
            return None
        try:
            run = self._client.get_run(run_id)
        except Exception:  # noqa: BLE001 - not in this store: a new run, not a failure
            return None
        live = run.info.lifecycle_stage == "active" and run.info.experiment_id == experiment_id
        return run if live else None

    def _close(self, status: str) -> None:
        if self._run_id is None:
            return
        try:
            mlflow.end_run(status)
        except Exception as err:  # noqa: BLE001 - a tracking failure must not stop the work
            self._disable(err)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params as ``a.b.c`` keys with string values cut to MLflow's limit."""
        flat = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten_dict(params).items()
                if k not in self._logged_params]
        if flat:
            self._call("log_batch", params=flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (0-dim tensors too) at ``step`` (0 when None); characters MLflow
        refuses in a name (e.g. the ``+`` of ``DPM++2M``) become ``_``."""
        now = int(time.time() * 1000)
        batch = [Metric(_METRIC_CHARS.sub("_", k), float(v), now, step or 0)
                 for k, v in metrics.items()]
        if batch:
            self._call("log_batch", metrics=batch)

    def other(self, run_id: str) -> Tracker:
        """A tracker of another run of this store, e.g. a finished nested one (not ended by
        it); disabled with this one."""
        other = Tracker(self.tracking_uri)
        other.__dict__.update(enabled=self.enabled, _client=self._client, _run_id=run_id,
                              experiment_id=self.experiment_id, experiment=self.experiment)
        return other

    def log_inputs(self, datasets: list[Any]) -> None:
        """Log ``mlflow.entities.DatasetInput`` s (the data a run read)."""
        if datasets:
            self._call("log_inputs", datasets=list(datasets))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as strings): labels and verdicts, not numbers."""
        if tags:
            self._call("log_batch", tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a local file or folder as an artifact (under ``artifact_path``)."""
        self._call("log_artifact", str(Path(path)), artifact_path)

    def log_table(self, data: Mapping[str, list[Any]], artifact_file: str) -> None:
        """Store columns of scalars as the MLflow table artifact ``mlflow.log_table`` writes
        (JSON in pandas' "split" layout, tagged for the UI), without pandas (not in skinny)."""
        rows = [[_cell(value) for value in row] for row in zip(*data.values())]
        self.log_text(json.dumps({"columns": list(data), "data": rows}, default=str),
                      artifact_file)
        tag = json.dumps([{"path": artifact_file, "type": "table"}])
        self._call("set_tag", "mlflow.loggedArtifacts", tag)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (e.g. ``"results/summary.md"``)."""
        self._call("log_text", text, artifact_file)

    def _log_timing(self, name: str, seconds: float) -> None:
        step = self._timing_steps.get(name, 0)
        self._timing_steps[name] = step + 1
        self.log_metrics({f"time/{name}_s": seconds}, step=step)


@contextlib.contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    nested: bool = False,
    log_system_metrics: bool = False,
    run_id: str | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run in ``experiment`` and yield its `Tracker`; the run ends on exit.
    ``log_system_metrics``: MLflow samples CPU, memory (and GPU) use into the run meanwhile.
    ``run_id``: continue that run when the store holds it (its params stay as first logged).

    The run is FINISHED, or FAILED if the body raised. While it is open the tracker is the one
    `time_execution` logs to.
    """
    with _bounded_http():
        tracker = Tracker(tracking_uri())
        tracker._open(experiment, run_name, tags or {}, nested, log_system_metrics, run_id)
        tracker.log_params(params or {})
        ACTIVE.append(tracker)
        status = "FAILED"
        try:
            yield tracker
            status = "FINISHED"
        finally:
            ACTIVE.remove(tracker)
            tracker._close(status)


def _cell(value: Any) -> Any:
    """A table cell as pandas writes it: NaN and infinities as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value

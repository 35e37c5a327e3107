"""MLflow tracking against real stores (local SQLite and a real `mlflow server`), and timing."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from diffbench.results.tracking import (
    _HTTP_BOUNDS,
    Tracker,
    TrackingWarning,
    flatten_dict,
    reset_timings,
    start_run,
    time_execution,
    timings,
)

HTTP_BOUNDS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def _use_tracking_uri(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    mlflow.set_tracking_uri(None)  # forget a URI set in-process, so the variable is used
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module: creating its tables takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def client(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{store_dir}/mlflow.db"
    _use_tracking_uri(monkeypatch, uri)
    monkeypatch.chdir(store_dir)  # the default artifact root is ./mlruns
    reset_timings()
    yield MlflowClient(uri)
    reset_timings()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@time_execution
def train_step(x: int) -> int:
    """Docstring kept."""
    return x + 1


class Trainer:
    @time_execution(name="epoch")
    def run_epoch(self, fail: bool = False) -> str:
        if fail:
            raise RuntimeError("diverged")
        return "done"


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_flatten_dict() -> None:
    nested = {"model": {"unet": {"channels": [32, 64]}, "ema": 0.999}, 3: None}
    assert flatten_dict(nested) == {
        "model.unet.channels": [32, 64],
        "model.ema": 0.999,
        "3": None,
    }
    assert flatten_dict({"a": {"b": 1}}, sep="/") == {"a/b": 1}


def test_run_logs_params_metrics_and_artifacts(client: MlflowClient, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text('{"fid": 3.2}')
    params = {"model": {"channels": 32, "dropout": None}, "long": "x" * (MAX_PARAM_VAL_LENGTH + 9)}

    with start_run("ddpm", run_name="smoke", params=params, tags={"paradigm": "ddpm"}) as tracker:
        assert tracker.enabled and tracker.run_id
        tracker.log_params({"sampler": {"steps": 50}})
        for step, loss in enumerate([0.9, 0.5, 0.25]):
            tracker.log_metrics({"loss": loss, "lr": 1e-3}, step=step)
        tracker.log_artifact(report, artifact_path="results")
        tracker.log_text("# Summary\n", "results/summary.md")

    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    assert client.get_experiment(run.info.experiment_id).name == "ddpm"
    assert run.data.params["model.channels"] == "32"
    assert run.data.params["model.dropout"] == "None"
    assert run.data.params["sampler.steps"] == "50"
    assert run.data.params["long"] == "x" * MAX_PARAM_VAL_LENGTH
    assert run.data.tags["paradigm"] == "ddpm"
    assert _history(client, tracker.run_id, "loss") == [(0, 0.9), (1, 0.5), (2, 0.25)]
    files = {f.path for f in client.list_artifacts(tracker.run_id, "results")}
    assert files == {"results/report.json", "results/summary.md"}
    local = client.download_artifacts(tracker.run_id, "results/summary.md", str(tmp_path))
    assert Path(local).read_text() == "# Summary\n"


def test_time_execution_logs_one_value_per_call(client: MlflowClient) -> None:
    assert train_step.__name__ == "train_step" and train_step.__doc__ == "Docstring kept."
    trainer = Trainer()

    with start_run("timing") as tracker:
        assert [train_step(i) for i in range(3)] == [1, 2, 3]
        assert trainer.run_epoch() == "done"
        with pytest.raises(RuntimeError, match="diverged"):
            trainer.run_epoch(fail=True)

    steps = _history(client, tracker.run_id, "time/train_step_s")
    assert [step for step, _ in steps] == [0, 1, 2]
    assert [step for step, _ in _history(client, tracker.run_id, "time/epoch_s")] == [0, 1]
    recorded = timings()
    assert len(recorded["train_step"]) == 3 and len(recorded["epoch"]) == 2
    assert sorted(recorded["train_step"]) == sorted(value for _, value in steps)
    assert all(value >= 0 for value in recorded["epoch"])


def _all_runs(client: MlflowClient) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_time_execution_without_a_run_only_records(client: MlflowClient) -> None:
    runs_before = len(_all_runs(client))
    train_step(0)
    assert len(timings()["train_step"]) == 1
    assert len(_all_runs(client)) == runs_before
    assert mlflow.active_run() is None
    reset_timings()
    assert timings() == {}


def test_failing_body_marks_run_failed(client: MlflowClient) -> None:
    with pytest.raises(ValueError, match="boom"), start_run("failing") as tracker:
        raise ValueError("boom")
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_a_run_id_continues_that_run_else_a_new_one_starts(client: MlflowClient) -> None:
    """A resumed job passes its first attempt's run id: the run goes on (its params kept as
    first logged, its metric history continued) and ends FINISHED; an id this store does not
    hold starts a new run."""
    with pytest.raises(KeyboardInterrupt), start_run("resumed", params={"lr": 1}) as first:
        first.log_metrics({"loss": 0.5}, step=1)
        raise KeyboardInterrupt
    assert client.get_run(first.run_id).info.status == "FAILED"
    with start_run("resumed", params={"lr": 1, "extra": 2}, run_id=first.run_id) as again:
        again.log_metrics({"loss": 0.25}, step=2)
    run = client.get_run(first.run_id)
    assert again.run_id == first.run_id and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "1", "extra": "2"}
    assert _history(client, first.run_id, "loss") == [(1, 0.5), (2, 0.25)]
    with start_run("resumed", run_id="0" * 32) as other:
        assert other.enabled and other.run_id != "0" * 32


def test_nested_runs_time_into_the_inner_run(client: MlflowClient) -> None:
    with start_run("sweep", run_name="parent") as parent:
        with start_run("sweep", run_name="child", nested=True) as child:
            train_step(1)
        train_step(2)

    child_run = client.get_run(child.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert len(_history(client, child.run_id, "time/train_step_s")) == 1
    assert len(_history(client, parent.run_id, "time/train_step_s")) == 1


def test_mlflow_error_mid_run_warns_once_and_disables(client: MlflowClient) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with start_run("conflict", params={"lr": 1}) as tracker:
            run_id = tracker.run_id
            tracker.log_params({"lr": 2})  # MLflow refuses to change a logged param
            assert not tracker.enabled and tracker.run_id is None
            tracker.log_metrics({"loss": 1.0})
            tracker.log_text("ignored", "ignored.txt")
            train_step(0)

    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1
    assert os.environ["MLFLOW_TRACKING_URI"] in str(ours[0].message)
    assert client.get_run(run_id).data.metrics == {}
    assert client.list_artifacts(run_id) == []
    assert len(timings()["train_step"]) == 1


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "nosuchscheme://store"])
def test_unreachable_tracking_warns_once_and_work_goes_on(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = uri.format(port=_free_port())
    _use_tracking_uri(monkeypatch, uri)
    for name in HTTP_BOUNDS:
        monkeypatch.delenv(name, raising=False)
    reset_timings()
    artifact = tmp_path / "a.txt"
    artifact.write_text("a")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with start_run("offline", params={"a": {"b": 1}}) as tracker:
            results = [train_step(i) for i in range(3)]
            tracker.log_metrics({"loss": 0.1}, step=1)
            tracker.log_artifact(artifact)
            tracker.log_text("t", "t.txt")

    assert results == [1, 2, 3] and len(timings()["train_step"]) == 3
    assert isinstance(tracker, Tracker) and not tracker.enabled and tracker.run_id is None
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and uri in str(ours[0].message)
    assert not any(name in os.environ for name in HTTP_BOUNDS)


class _FailingServer(http.server.BaseHTTPRequestHandler):
    """Answers every request with 503 (a server that is up but failing) and counts them."""

    requests: list[str] = []

    def _fail(self) -> None:
        _FailingServer.requests.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:  # quiet
        pass


def test_a_failing_server_gets_a_bounded_number_of_requests(monkeypatch: pytest.MonkeyPatch):
    """While a run is open, MLflow's HTTP retries are bounded (2 retries instead of 7): a server
    answering 503 sees the health probe, then one request and its 2 retries, then nothing more
    for the rest of the run (tracking is disabled after the one warning)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FailingServer.requests.clear()
    try:
        _use_tracking_uri(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        for name in HTTP_BOUNDS:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # no waits between retries
        with pytest.warns(TrackingWarning), start_run("failing-server") as tracker:
            tracker.log_metrics({"loss": 0.1}, step=1)
            tracker.log_text("t", "t.txt")
    finally:
        server.shutdown()
        server.server_close()
    requests = list(_FailingServer.requests)
    assert requests[0] == "GET /health"
    max_retries = int(_HTTP_BOUNDS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    assert len(requests[1:]) == 1 + max_retries, requests
    assert len(set(requests[1:])) == 1, requests  # the same request, retried


def _wait_for_health(url: str, server: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's whole process group (its uvicorn worker included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # whatever did not stop
    server.wait()


def test_real_mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
        "--artifacts-destination", str(tmp_path / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_health(url, server, log, timeout_s=90)
        _use_tracking_uri(monkeypatch, url)
        with start_run("served", run_name="remote", params={"model": {"ch": 8}}) as tracker:
            assert tracker.enabled
            train_step(0)
            tracker.log_metrics({"loss": 0.5}, step=3)
            tracker.log_text("remote text", "notes/a.txt")

        client = MlflowClient(url)
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.data.params == {"model.ch": "8"}
        assert _history(client, tracker.run_id, "loss") == [(3, 0.5)]
        assert len(_history(client, tracker.run_id, "time/train_step_s")) == 1
        local = client.download_artifacts(tracker.run_id, "notes/a.txt", str(tmp_path))
        assert Path(local).read_text() == "remote text"
    finally:
        _stop(server)


def test_without_sqlalchemy_runs_go_to_a_file_store_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mlflow-skinny has no SQLAlchemy, so MLflow's default SQLite store cannot open: with no
    URI set, a run goes to ./mlruns, where a client (and `mlflow ui` in that folder) reads it."""
    import diffbench.results.tracking as tracking

    mlflow.set_tracking_uri(None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.ALLOW_FILE_STORE, raising=False)
    monkeypatch.setattr(tracking, "_has_sqlalchemy", lambda: False)
    monkeypatch.chdir(tmp_path)
    try:
        with start_run("skinny", params={"lr": 0.1}) as tracker:
            tracker.log_metrics({"loss": 0.5}, step=2)
            tracker.log_table({"name": ["a", "b"], "mse": [0.5, float("nan")]}, "table.json")
        assert tracker.enabled and tracker.tracking_uri == (tmp_path / "mlruns").as_uri()
        assert os.environ[tracking.ALLOW_FILE_STORE] == "true"  # MLflow 3.x refuses it without
    finally:
        mlflow.set_tracking_uri(None)
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    run = client.get_run(tracker.run_id)
    assert run.data.params == {"lr": "0.1"} and _history(client, run.info.run_id, "loss") == [
        (2, 0.5)]
    assert not (tmp_path / "mlflow.db").exists()
    table = client.load_table(run.info.experiment_id, "table.json", run_ids=[tracker.run_id])
    assert list(table.columns) == ["name", "mse"] and list(table["name"]) == ["a", "b"]
    assert table["mse"][0] == 0.5 and table["mse"].isna()[1]


def test_a_set_uri_wins_over_the_file_store(client: MlflowClient, monkeypatch) -> None:
    import diffbench.results.tracking as tracking

    monkeypatch.setattr(tracking, "_has_sqlalchemy", lambda: False)
    assert tracking.tracking_uri() == os.environ["MLFLOW_TRACKING_URI"]


def test_a_continued_parent_logs_each_row_once_and_relogs_a_half_logged_one(
        client: MlflowClient, tmp_path: Path) -> None:
    """What a resumed comparison relies on: its run id saved in the folder (dropped for a new
    run), the rows already logged found by their tag, a row run a kill left unfinished deleted."""
    from diffbench.results.mlflow_runs import (
        ROW_TAG,
        forget_run,
        log_row,
        row_runs,
        row_tag,
        save_run,
        saved_run,
    )
    from diffbench.results.row import make_row

    rows = [make_row(name=name, view="equal_strength", strength=0.3, seed=0, num_images=2,
                     mse=0.1, mse_ci95=[0.05, 0.2], system_config={}) for name in ("A", "B")]
    with start_run("rows") as parent:
        save_run(tmp_path, parent, "0123abcd")
        log_row(parent, rows[0], row_runs(parent))
        half = client.create_run(parent.experiment_id, tags={  # killed while being logged
            "mlflow.parentRunId": parent.run_id, ROW_TAG: row_tag(rows[1])})
    assert saved_run(tmp_path)["run_id"] == parent.run_id
    with start_run("rows", run_id=saved_run(tmp_path)["run_id"]) as again:
        logged = row_runs(again)
        assert set(logged) == {row_tag(rows[0])}
        for row in rows:
            log_row(again, row, logged)
    children = client.search_runs([parent.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["A equal_strength s0.3",
                                                         "B equal_strength s0.3"]
    assert all(r.data.metrics["mse_ci95_hi"] == 0.2 for r in children)
    assert client.get_run(half.info.run_id).info.lifecycle_stage == "deleted"
    forget_run(tmp_path)
    assert saved_run(tmp_path) == {}

"""MLflow tracking against a real server: run identity, exactly-once metrics, outages, concurrency."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from components.contract import trial_id
from components.runtime import tracking
from components.runtime.sender import MetricSender, deliver_spool, read_spool
from tests.support.tracking import _connector, _steps
from tests.support.train import (
    assert_each_step_once,
    make_data,
    start_train,
    train_env,
    trial_params,
)


def test_http_retries_and_timeout_are_capped() -> None:
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
    tracking.configure_http(env)
    assert env == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    tracking.configure_http(env)
    assert (
        env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3" and env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    )


def test_experiment_name_falls_back_from_config_to_env() -> None:
    assert tracking.experiment_name("given", {"MLFLOW_EXPERIMENT_NAME": "x"}) == "given"
    assert (
        tracking.experiment_name(None, {"MLFLOW_EXPERIMENT_NAME": "x", "SWEEPYARD_PIPELINE": "p"})
        == "x"
    )
    assert tracking.experiment_name(None, {"SWEEPYARD_PIPELINE": "p"}) == "p"
    assert tracking.experiment_name(None, {}) == tracking.DEFAULT_EXPERIMENT


def test_racing_creators_end_with_one_parent_run_and_one_child_run(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path))  # where the first creator claims its run
    client = tracking.client(mlflow_server.url)
    sweep_ids: list[str] = []
    trial_ids: list[str] = []

    def worker() -> None:
        sweep_ids.append(
            tracking.ensure_sweep_run(
                "race", experiment="race-exp", mlflow_client=tracking.client(mlflow_server.url)
            )
        )
        trial_ids.append(
            tracking.ensure_trial_run(
                "race",
                "t1",
                experiment="race-exp",
                mlflow_client=tracking.client(mlflow_server.url),
            )
        )

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(sweep_ids)) == 1 and len(set(trial_ids)) == 1
    exp = client.get_experiment_by_name("race-exp")
    assert exp is not None
    active = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags[tracking.TAG_ROLE] for r in active) == ["sweep", "trial"]
    child = client.get_run(trial_ids[0])
    assert child.data.tags[tracking.TAG_PARENT] == sweep_ids[0]
    assert (
        tracking.find_trial_run("race", "t1", experiment="race-exp", mlflow_client=client)
        == trial_ids[0]
    )
    assert (
        tracking.find_trial_run("race", "nope", experiment="race-exp", mlflow_client=client) is None
    )
    claim = tmp_path / "sweeps" / "race" / "trials" / "t1" / "mlflow_run_id"
    assert claim.read_text() == trial_ids[0]
    client.delete_run(trial_ids[0])  # a claim naming a run the server no longer has is redone
    again = tracking.ensure_trial_run("race", "t1", experiment="race-exp", mlflow_client=client)
    assert again != trial_ids[0] and claim.read_text() == again


def test_points_are_batched_and_logged_exactly_once_across_attempts(mlflow_server: Any) -> None:
    connect = _connector(mlflow_server.url, "once", "t1", "once-exp")
    first = MetricSender(connect, interval=0.2)
    first.add([("loss", float(s), 1000 + s, s) for s in range(1, 101)])
    assert first.close(timeout=30) == 0
    assert first.delivered == 100
    # A resumed attempt recomputes steps 50..150 (from a checkpoint at 49).
    second = MetricSender(connect, interval=0.2)
    second.add([("loss", -float(s), 5000 + s, s) for s in range(50, 151)])
    assert second.close(timeout=30) == 0
    assert second.skipped == 51 and second.delivered == 50
    run_id = first.run_id
    assert run_id is not None and second.run_id == run_id
    history = tracking.client(mlflow_server.url).get_metric_history(run_id, "loss")
    assert_each_step_once([m.step for m in history], list(range(1, 151)), "mlflow")
    assert {m.step: m.value for m in history}[100] == 100.0  # the first delivery wins


def test_a_server_that_is_not_there_yet_delays_points_but_loses_none(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast variant of the outage: the trial starts while its server is unreachable."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from pipelines.backends.mlflow_server import free_port

    target = {"url": f"http://127.0.0.1:{free_port()}"}  # nothing listens there

    def connect() -> tuple[Any, str]:
        return _connector(target["url"], "late", "t1", "late-exp")()

    sender = MetricSender(connect, interval=0.1, max_backoff=0.3)
    started = time.perf_counter()
    sender.add([("loss", float(s), 1000 + s, s) for s in range(1, 201)])
    assert time.perf_counter() - started < 0.5
    assert not sender.flush(timeout=1.0) and sender.failures >= 1 and not sender.connected
    spool = tmp_path / "spool.jsonl"
    assert sender.close(timeout=0.5, spool=spool) == 200  # persisted, not dropped
    target["url"] = mlflow_server.url  # the server answers again
    assert deliver_spool(spool, connect, timeout=60) == 0 and not spool.exists()
    run_id = tracking.find_trial_run(
        "late", "t1", experiment="late-exp", mlflow_client=tracking.client(mlflow_server.url)
    )
    assert run_id is not None
    assert_each_step_once(_steps(mlflow_server.url, run_id, "loss"), list(range(1, 201)), "mlflow")


@pytest.mark.slow
def test_an_outage_loses_nothing_and_leftovers_are_spooled(
    fresh_mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the trainer sets them
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = fresh_mlflow_server.url
    connect = _connector(url, "outage", "t1", "outage-exp")
    sender = MetricSender(connect, interval=0.1, max_backoff=0.5)
    sender.add([("loss", float(s), 1000 + s, s) for s in range(1, 51)])
    assert sender.flush(timeout=30)
    run_id = sender.run_id
    assert run_id is not None
    fresh_mlflow_server.stop()
    started = time.perf_counter()
    for s in range(51, 101):
        sender.add([("loss", float(s), 1000 + s, s)])
    assert time.perf_counter() - started < 0.5  # adding never waits for the server
    spool = tmp_path / "spool.jsonl"
    assert sender.close(timeout=1.0, spool=spool) == 50
    assert [p[3] for p in read_spool(spool)] == list(range(51, 101))
    fresh_mlflow_server.restart()
    assert deliver_spool(spool, connect, timeout=30) == 0
    assert not spool.exists()
    assert_each_step_once(_steps(url, run_id, "loss"), list(range(1, 101)), "mlflow")


@pytest.mark.slow
def test_a_trial_finishes_through_a_server_outage_without_losing_a_point(
    fresh_mlflow_server: Any, tmp_path: Path
) -> None:
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    params = trial_params(steps=3000, eval_every=500)
    proc = start_train(
        params, data, train_env(shared, fresh_mlflow_server.url), "--flush-timeout", "300"
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "tracking to MLflow run" in line:
            break
    fresh_mlflow_server.stop()  # mid-training: the trainer keeps going
    time.sleep(2.0)
    assert proc.poll() is None, "the trainer stopped when the server did"
    fresh_mlflow_server.restart()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    result = json.loads(
        (shared / "sweeps" / "s1" / "trials" / trial_id(params) / "result.json").read_text()
    )
    assert result["metric_points_pending"] == 0
    assert_each_step_once(
        _steps(fresh_mlflow_server.url, result["run_id"], "train_loss"),
        list(range(1, 3001)),
        "mlflow",
    )
    assert _steps(fresh_mlflow_server.url, result["run_id"], "val_loss") == list(
        range(500, 3001, 500)
    )


# 32 trainer processes logging at once: tests/components/test_tracking_load.py


def _process_tree(pid: int) -> list[str]:
    """Command lines of ``pid`` and all its descendants (from /proc)."""
    lines = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            lines += _process_tree(int(child))
    return lines


def test_the_local_mlflow_server_runs_no_job_runner(mlflow_server: Any) -> None:
    """MLflow 3's GenAI job runner would start 7 processes taking ~13 s of CPU from the trials."""
    tree = _process_tree(mlflow_server.process.pid)
    assert not [c for c in tree if "huey" in c or "_job_runner" in c], tree
    assert any("uvicorn" in c or "mlflow" in c for c in tree)

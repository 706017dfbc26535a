"""MLflow tracking under load and trouble: 32 trainer processes at once, a refusing, overloaded server."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.runtime import tracking
from components.runtime.sender import MetricSender
from pipelines.backends.mlflow_server import free_port, start_mlflow_server
from tests.support.tracking import _connector, _steps
from tests.support.train import (
    assert_each_step_once,
    make_data,
    start_train,
    train_env,
    trial_params,
    trial_path,
)

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _trainers_log_at_once(url: str, tmp_path: Path, n: int = 32, steps: int = 120) -> None:
    """``n`` real trainer processes (``python -m components.train``) logging to one server."""
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    env = train_env(shared, url)
    params = [trial_params(steps=steps, eval_every=60, seed=i + 1) for i in range(n)]
    # Here 2 cores carry 32 trainers and the server: the trainers spend minutes importing, then all
    # connect, train and flush within about a minute, so each one's exit flush queues behind ~400
    # requests (on its own node a trainer waits 30 s by default). The budget is wider here; what is
    # checked is that every point arrives once, not how fast a starved server answers.
    flush = ("--flush-timeout", "300")
    procs = [start_train(p, data, env, *flush) for p in params]
    outs = [proc.communicate(timeout=900)[0] for proc in procs]
    failed = [
        (p.returncode, out[-1500:]) for p, out in zip(procs, outs, strict=True) if p.returncode
    ]
    assert not failed, failed[:2]
    run_ids = set()
    for p, out in zip(params, outs, strict=True):
        result = json.loads((trial_path(shared, p) / "result.json").read_text())
        assert result["metric_points_pending"] == 0, out[-3000:]
        run_ids.add(result["run_id"])
        assert_each_step_once(
            _steps(url, result["run_id"], "train_loss"), list(range(1, steps + 1)), result["run_id"]
        )
        assert _steps(url, result["run_id"], "val_loss") == [60, 120]
    assert len(run_ids) == n  # one run per trial, none shared, none doubled


@pytest.mark.slow
def test_12_trainer_processes_log_at_once_to_one_sqlite_server(
    fresh_mlflow_server: Any, tmp_path: Path
) -> None:
    # the local default server (SQLite, one writer); the 32-trainer load is the Postgres test's:
    # 12 processes on 2 cores already queue every flush behind the others
    _trainers_log_at_once(fresh_mlflow_server.url, tmp_path, n=12)


@pytest.mark.slow
def test_32_trainer_processes_log_at_once_to_one_postgres_server(
    postgres_db: str, tmp_path: Path
) -> None:
    server = start_mlflow_server(tmp_path / "pg-mlflow", backend_store_uri=postgres_db, workers=4)
    try:
        _trainers_log_at_once(server.url, tmp_path)
    finally:
        server.stop()


class Troubled:
    """A loopback HTTP front for a real MLflow server that answers 429 and 503 while ``overloaded``.

    It binds ``port`` only when started: until then, connections to it are refused.
    """

    def __init__(self, port: int, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.overloaded = True
        self.refused_answers = 0
        self.forwarded: list[str] = []
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                front.answer(self)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if self.overloaded:
            self.refused_answers += 1
            status = 429 if self.refused_answers % 2 else 503
            payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}'
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Retry-After", "1")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
        conn.request(h.command, h.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.forwarded.append(h.path.split("?")[0])
        h.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP:
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_points_survive_refused_connections_then_429_and_503_exactly_once(
    mlflow_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the trainer sets them
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    port = free_port()
    connect = _connector(f"http://127.0.0.1:{port}", "troubled", "t1", "troubled-exp")
    sender = MetricSender(connect, interval=0.1, max_backoff=0.3)
    sender.add([("loss", float(s), 1000 + s, s) for s in range(1, 101)])
    _wait(lambda: sender.failures >= 2, 30, "the sender never tried the refusing port")
    assert not sender.connected and "Connection" in (sender.last_error or "")
    front = Troubled(port, mlflow_server.url)  # now it answers, but only 429 and 503
    try:
        _wait(lambda: front.refused_answers >= 4, 30, "the sender did not retry the busy server")
        sender.add([("loss", float(s), 1000 + s, s) for s in range(101, 201)])
        assert not sender.connected and sender.pending()  # nothing got through, nothing dropped
        front.overloaded = False
        assert sender.flush(timeout=60), sender.last_error
        front.overloaded = True  # a second stretch, after the run exists and points went in
        sender.add([("loss", float(s), 1000 + s, s) for s in range(201, 301)])
        _wait(lambda: front.refused_answers >= 8, 30, "no request in the second stretch")
        front.overloaded = False
        assert sender.close(timeout=60) == 0
    finally:
        front.stop()
    assert sender.delivered == 300
    assert any(path.endswith("/runs/log-batch") for path in front.forwarded)
    run_id = tracking.find_trial_run(
        "troubled", "t1", experiment="troubled-exp",
        mlflow_client=tracking.client(mlflow_server.url),
    )  # fmt: skip
    assert run_id == sender.run_id
    assert_each_step_once(_steps(mlflow_server.url, run_id, "loss"), list(range(1, 301)), "mlflow")

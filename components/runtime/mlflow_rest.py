"""A small client of MLflow's REST API for a trial: the requests a trial makes (its run found or
created, params, tags, metric batches, dataset inputs, status) over one kept-alive connection,
without importing mlflow (pandas, fastapi, pydantic: seconds of a short trial's start-up).
:func:`components.runtime.tracking.trial_client` picks it for an ``http(s)://`` server and falls
back to ``MlflowClient`` for what it does not implement.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

HTTP_TIMEOUT_SECONDS = 10  # per request (MLFLOW_HTTP_REQUEST_TIMEOUT overrides it)
MLFLOW_ONLY_ENV = (
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_ENABLE_DB_SDK",
)
# log-batch limits of the MLflow server (as MlflowClient splits them)
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}


class Metric(NamedTuple):
    key: str
    value: float
    timestamp: int
    step: int


class Param(NamedTuple):
    key: str
    value: str


class RunTag(NamedTuple):
    key: str
    value: str


class RestError(Exception):
    """An MLflow REST request failed: ``error_code`` as MLflow names it (``RESOURCE_DOES_NOT_EXIST``),
    or ``HTTP_<status>`` / ``IO_ERROR``."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code


class RestClient:
    """The MLflow requests a trial makes, over one kept-alive HTTP connection, without importing
    mlflow (its import costs a trial process ~1.5 s of CPU; see :func:`trial_client`).

    It answers the part of ``MlflowClient``'s interface this module, the sender and the lineage
    use, with the same shapes (``run.info.run_id``, ``run.data.params``, ``experiment.tags``...).
    Thread-safe: one request at a time.
    """

    def __init__(self, uri: str, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{uri!r}: not an http(s) tracking URI")
        self.uri = uri
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._base = parsed.path.rstrip("/") + "/api/2.0/mlflow/"
        self._headers = {"Content-Type": "application/json", "User-Agent": "sweepyard"}
        token = env.get("MLFLOW_TRACKING_TOKEN", "").strip()
        user, password = (
            env.get("MLFLOW_TRACKING_USERNAME", ""),
            env.get("MLFLOW_TRACKING_PASSWORD", ""),
        )
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user or password:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        try:
            self.timeout = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "") or HTTP_TIMEOUT_SECONDS)
        except ValueError:
            self.timeout = float(HTTP_TIMEOUT_SECONDS)
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0  # how many were sent (the spans report it)

    # ----------------------------------------------------------------- transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _call(self, method: str, endpoint: str, body: Mapping[str, Any] | None = None) -> Any:
        path = self._base + endpoint
        data = None
        if method == "GET" and body:
            path += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        with self._lock:
            self.requests += 1
            for tries_left in (1, 0):  # a kept-alive connection the server closed: once more
                conn = self._connection()
                try:
                    conn.request(method, path, body=data, headers=self._headers)
                    response = conn.getresponse()
                    raw = response.read()
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError)
                    if not (tries_left and stale):
                        raise RestError("IO_ERROR", f"{type(exc).__name__}: {exc}") from exc
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._conn = None
        try:
            doc = json.loads(raw) if raw.strip() else {}
        except ValueError:
            doc = {}
        if response.status != 200:
            code = doc.get("error_code") if isinstance(doc, dict) else None
            message = doc.get("message") if isinstance(doc, dict) else None
            text = message or raw[:300].decode("utf-8", "replace")
            raise RestError(code or f"HTTP_{response.status}", f"{method} {endpoint}: {text}")
        return doc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ----------------------------------------------------------------- experiments

    def get_experiment_by_name(self, name: str) -> Any:
        try:
            doc = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
        except RestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return _experiment(doc["experiment"])

    def create_experiment(self, name: str, tags: Mapping[str, str] | None = None) -> str:
        doc = self._call("POST", "experiments/create", {"name": name, "tags": _kv(tags or {})})
        return str(doc["experiment_id"])

    def restore_experiment(self, experiment_id: str) -> None:
        self._call("POST", "experiments/restore", {"experiment_id": experiment_id})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        body = {"experiment_id": experiment_id, "key": key, "value": value}
        self._call("POST", "experiments/set-experiment-tag", body)

    # ----------------------------------------------------------------- runs

    def get_run(self, run_id: str) -> Any:
        return _run(self._call("GET", "runs/get", {"run_id": run_id})["run"])

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str = "",
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
    ) -> list[Any]:
        body = {
            "experiment_ids": list(experiment_ids),
            "filter": filter_string,
            "max_results": max_results,
            "order_by": list(order_by or []),
        }
        return [_run(r) for r in self._call("POST", "runs/search", body).get("runs", [])]

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> Any:
        body: dict[str, Any] = {
            "experiment_id": experiment_id,
            "start_time": start_time if start_time is not None else int(time.time() * 1000),
            "tags": _kv(tags or {}),
        }
        if run_name:
            body["run_name"] = run_name
        return _run(self._call("POST", "runs/create", body)["run"])

    def delete_run(self, run_id: str) -> None:
        self._call("POST", "runs/delete", {"run_id": run_id})

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id}
        if status:
            body["status"] = status
        if name:
            body["run_name"] = name
        self._call("POST", "runs/update", body)

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        body = {"run_id": run_id, "run_uuid": run_id, "status": status,
                "end_time": int(time.time() * 1000)}  # fmt: skip
        self._call("POST", "runs/update", body)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        body = {"run_id": run_id, "run_uuid": run_id, "key": key, "value": str(value)}
        self._call("POST", "runs/set-tag", body)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Any] = (),
        params: Iterable[Any] = (),
        tags: Iterable[Any] = (),
        synchronous: bool = True,
    ) -> None:
        """Metrics, params and tags in as few requests as the server's limits allow (usually one)."""
        del synchronous  # always
        rest = {
            "metrics": [
                {"key": m.key, "value": m.value, "timestamp": int(m.timestamp), "step": int(m.step)}
                for m in metrics
            ],
            "params": [{"key": p.key, "value": str(p.value)} for p in params],
            "tags": [{"key": t.key, "value": str(t.value)} for t in tags],
        }
        while any(rest.values()):
            body: dict[str, Any] = {"run_id": run_id}
            room = BATCH_LIMITS["metrics"]  # all kinds together
            for kind, limit in BATCH_LIMITS.items():
                take = min(limit, room)
                body[kind], rest[kind] = rest[kind][:take], rest[kind][take:]
                room -= len(body[kind])
            self._call("POST", "runs/log-batch", body)

    def log_inputs(self, run_id: str, datasets: Sequence[Mapping[str, Any]]) -> None:
        """Dataset inputs, each as MLflow's REST form (``{"dataset": {...}, "tags": [...]}``)."""
        self._call("POST", "runs/log-inputs", {"run_id": run_id, "datasets": list(datasets)})


def _kv(items: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in items.items()]


def _experiment(doc: Mapping[str, Any]) -> Any:
    return SimpleNamespace(
        experiment_id=str(doc["experiment_id"]),
        name=doc.get("name", ""),
        lifecycle_stage=doc.get("lifecycle_stage", "active"),
        tags={t["key"]: t.get("value", "") for t in doc.get("tags", [])},
    )


def _run(doc: Mapping[str, Any]) -> Any:
    info, data = doc.get("info", {}), doc.get("data", {})
    run_id = str(info.get("run_id") or info.get("run_uuid"))
    return SimpleNamespace(
        info=SimpleNamespace(
            run_id=run_id,
            experiment_id=str(info.get("experiment_id", "")),
            status=info.get("status", ""),
            start_time=int(info["start_time"]) if info.get("start_time") else None,
            lifecycle_stage=info.get("lifecycle_stage", "active"),
        ),
        data=SimpleNamespace(
            params={p["key"]: p.get("value", "") for p in data.get("params", [])},
            tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
            latest_steps={m["key"]: int(m.get("step", 0)) for m in data.get("metrics", [])},
        ),
    )

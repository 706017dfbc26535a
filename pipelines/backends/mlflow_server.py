"""A real MLflow tracking server on loopback, for local runs (and the tests).

The local backend starts one per run when ``MLFLOW_TRACKING_URI`` is not set, so ``mlflow ui``-style
comparison works exactly as against the team's shared server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM a server started with ``start_new_session``, SIGKILL it after ``timeout`` s (idempotent)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class MlflowServer:
    """A running server: ``url`` to log to, ``stop()`` to end it (idempotent)."""

    url: str
    port: int
    root: Path
    backend_store_uri: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_process_group(self.process, timeout=15)

    def restart(self, timeout: float = 60.0) -> MlflowServer:
        """Start a new server on the same port and store (for outage tests)."""
        self.stop()
        new = start_mlflow_server(
            self.root, port=self.port, backend_store_uri=self.backend_store_uri, timeout=timeout
        )
        self.process, self.log_path = new.process, new.log_path
        return self


def start_mlflow_server(
    root: Path,
    *,
    port: int | None = None,
    backend_store_uri: str | None = None,
    workers: int = 2,
    timeout: float = 90.0,
) -> MlflowServer:
    """Start ``mlflow server`` on 127.0.0.1 and wait until it answers.

    Args:
        root: folder for the sqlite store (unless ``backend_store_uri``), artifacts and the log.
        port: fixed port (for restarts); a free one by default.
        backend_store_uri: e.g. ``postgresql://postgres@127.0.0.1:5432/db``; sqlite in ``root`` by default.
        workers: server worker processes (each holds its own DB connection pool).
        timeout: seconds to wait for the health check.

    Raises:
        RuntimeError: the server exited or did not answer in time (the log's tail is included).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log_path = root / f"mlflow-server-{port}.log"
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [
        mlflow_bin,
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    # MLflow 3's job runner (GenAI judges, trace rollups) starts 7 more processes that each import
    # MLflow: ~13 s of CPU at start and ~2 % of a core at idle, taken from the trials; we run none.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", port, root, backend_store_uri, proc, log_path)
    wait_until_up("mlflow server", proc, server.url, "/health", log_path, timeout, server.stop)
    return server


def wait_until_up(
    what: str,
    proc: subprocess.Popen[bytes],
    url: str,
    probe: str,
    log_path: Path,
    timeout: float,
    stop: Callable[[], None],
) -> None:
    """Wait until ``url + probe`` answers 200; ``stop()`` and raise (with the log's tail) when the
    process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + probe, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    stop()
    raise RuntimeError(
        f"{what} did not answer on {url} within {timeout:.0f}s:\n{log_tail(log_path)}"
    )


@contextlib.contextmanager
def mlflow_server(root: Path, **kwargs: object) -> Iterator[MlflowServer]:
    """``with mlflow_server(path) as srv:`` — started on entry, stopped on exit."""
    server = start_mlflow_server(root, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def log_tail(path: Path, n: int = 30) -> str:
    """The last ``n`` lines of a server's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"

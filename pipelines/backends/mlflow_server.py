"""A real MLflow tracking server on loopback, for local runs (and the tests).

The local backend gives every run one when ``MLFLOW_TRACKING_URI`` is not set, so ``mlflow ui``-style
comparison works exactly as against the team's shared server: a :class:`LazyMlflowServer`, whose
address answers at once and which starts the real server on its first connection only (a run in
which no step talks to MLflow, such as a resubmitted sweep that has nothing left to do, starts
none).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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


# The lazy server's preferred ports: below Linux's ephemeral range (32768-60999), so no client
# socket holds one; the store's path picks one, so a project's local MLflow keeps one address.
STABLE_PORTS = (20000, 30000)


def stable_port(root: Path) -> int:
    """The port a store's lazy server prefers (the same for the same folder)."""
    low, high = STABLE_PORTS
    digest = hashlib.sha256(str(root.resolve()).encode()).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low)


class LazyMlflowServer:
    """A loopback address for MLflow that starts the real server on its first connection.

    ``url`` answers at once: a connection made before the server is up waits for it (MLflow's
    client waits up to its request timeout, 120 s by default), then every connection is relayed
    to the server, byte for byte. ``stop()`` closes the address and stops the server, if it was
    started. The address is :func:`stable_port` of ``root`` when that port is free, else any.
    """

    def __init__(
        self,
        root: Path,
        *,
        on_start: Callable[[MlflowServer], None] | None = None,
        **server_kwargs: object,
    ):
        self.root = root
        self.on_start = on_start
        self.server_kwargs = server_kwargs
        self.server: MlflowServer | None = None
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind(("127.0.0.1", stable_port(root)))
        except OSError:
            self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        """Whether some connection started the real server."""
        return self.server is not None

    def backend(self) -> MlflowServer:
        """The real server, started now if no connection started it yet.

        Raises:
            RuntimeError: it could not start (every later connection is refused the same way).
        """
        with self._lock:
            if self.error is not None:
                raise RuntimeError(str(self.error))
            if self.server is None:
                if self._closed.is_set():
                    raise RuntimeError("the lazy MLflow server is stopped")
                try:
                    self.server = start_mlflow_server(self.root, **self.server_kwargs)  # type: ignore[arg-type]
                except Exception as e:
                    self.error = e
                    raise
                if self.on_start is not None:
                    self.on_start(self.server)
            return self.server

    def stop(self) -> None:
        """Close the address and stop the real server (idempotent)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            if self.server is not None:
                self.server.stop()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)  # closing a socket does not wake accept(): poll
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            conn.settimeout(None)
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            port = self.backend().port
            upstream = socket.create_connection(("127.0.0.1", port))
        except Exception:  # the server could not start: the client sees its connection close
            conn.close()
            return
        done = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
        done.start()
        _pipe(conn, upstream)
        done.join()
        for s in (conn, upstream):
            s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends, then end ``dst``'s writing side."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)

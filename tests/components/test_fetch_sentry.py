"""A failed fetch reaches Sentry once, tagged, and without the secret it refused to use."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


class SentryReceiver:
    """A loopback endpoint that stores every envelope posted to it."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli  # type: ignore[import-not-found]

                    body = brotli.decompress(body)
                receiver.envelopes.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def all_events(self) -> list[dict[str, Any]]:
        """Every event item (those with a level), exception or message."""
        found = []
        for envelope in self.envelopes:
            for line in envelope.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "level" in item and "event_id" in item:
                    found.append(item)
        return found

    def events(self) -> list[dict[str, Any]]:
        found = []
        for envelope in self.envelopes:
            for line in envelope.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "exception" in item:
                    found.append(item)
        return found


@pytest.fixture
def sentry() -> Iterator[SentryReceiver]:
    receiver = SentryReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_refused_source_is_one_tagged_event_without_the_password(sentry, tmp_path: Path):
    secret = f"pw-{uuid.uuid4().hex}"
    proc = subprocess.run(
        [
            sys.executable, "-m", "components.fetch",
            f"postgresql://reader:{secret}@127.0.0.1:5432/features",
            "--dataset", "features", "--query", "SELECT 1",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "SENTRY_DSN": sentry.dsn,
            "SWEEPYARD_SHARED": str(tmp_path),
            "SWEEPYARD_PIPELINE": "sweep",
            "SWEEPYARD_ATTEMPT": "2",
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    events = sentry.events()
    assert len(events) == 1 and len(sentry.all_events()) == 1  # no second, log-made event
    event = events[0]
    tags = event["tags"]
    assert tags["component"] == "fetch" and tags["pipeline"] == "sweep" and tags["attempt"] == "2"
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "FetchError" and "contains a password" in exc["value"]
    raw = b"".join(sentry.envelopes).decode("utf-8", errors="replace")
    assert secret not in raw and secret not in proc.stderr + proc.stdout


def test_database_secret_never_reaches_sentry(sentry, tmp_path: Path):
    from tests.support.fetch import free_port

    secret = f"pw-{uuid.uuid4().hex}"
    proc = subprocess.run(
        [
            sys.executable, "-m", "components.fetch",
            f"postgresql://reader@127.0.0.1:{free_port()}/features",
            "--dataset", "features", "--query", "SELECT 1",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "SENTRY_DSN": sentry.dsn,
            "SWEEPYARD_SHARED": str(tmp_path),
            "SWEEPYARD_DB_PASSWORD": secret,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # nobody listening: transient, retried
    (event,) = sentry.all_events()
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "TransientFetchError" and "cannot connect" in exc["value"]
    frames = [f for f in exc["stacktrace"]["frames"] if f.get("vars")]
    assert frames, "the event carries stack-frame variables: the scrubbing is exercised"
    raw = b"".join(sentry.envelopes).decode("utf-8", errors="replace")
    assert secret not in raw and secret not in proc.stderr + proc.stdout

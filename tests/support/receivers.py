"""Loopback HTTP receivers standing in for Sentry and a Slack webhook (used by the alert tests).

Each one is a real ``http.server`` in a thread that records what it was sent; the components talk
to it over TCP exactly as they would to sentry.io or hooks.slack.com.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A loopback HTTP server recording every POST; ``status``/``reply`` set what it answers."""

    status: int = 200
    reply: bytes = b"ok"
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, n: int = 1, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.requests)


def start_receiver(receiver: Receiver) -> Receiver:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", str(len(receiver.reply)))
            self.end_headers()
            self.wfile.write(receiver.reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    receiver.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


@contextlib.contextmanager
def receiving(status: int = 200, reply: bytes = b"ok") -> Iterator[Receiver]:
    """``with receiving() as r:`` -- a receiver on a free loopback port, shut down on exit."""
    receiver = start_receiver(Receiver(status=status, reply=reply))
    try:
        yield receiver
    finally:
        assert receiver.server is not None
        receiver.server.shutdown()
        receiver.server.server_close()


def sentry_dsn(receiver: Receiver, key: str = "public") -> str:
    return f"http://{key}@127.0.0.1:{receiver.port}/1"


def decode_body(req: Received) -> bytes:
    encoding = {k.lower(): v for k, v in req.headers.items()}.get("content-encoding", "")
    if encoding == "gzip":
        return gzip.decompress(req.body)
    if encoding == "deflate":
        return zlib.decompress(req.body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return bytes(brotli.decompress(req.body))
    return req.body


def parse_envelope(raw: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Sentry's envelope format: a JSON header line, then (item header line, payload) pairs."""
    header_line, _, rest = raw.partition(b"\n")
    header = json.loads(header_line)
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        if "length" in item_header:
            n = int(item_header["length"])
            payload, rest = rest[:n], rest[n + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return header, items


def sentry_events(receiver: Receiver) -> list[dict[str, Any]]:
    """Every error event the receiver got (transactions, sessions and client reports skipped)."""
    events = []
    for req in receiver.requests:
        if not req.path.endswith("/envelope/"):
            continue
        _, items = parse_envelope(decode_body(req))
        for item_header, payload in items:
            if item_header.get("type") == "event":
                events.append(json.loads(payload))
    return events

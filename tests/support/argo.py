"""A fake Argo Workflows server on loopback (its REST API as the Argo backend calls it) and the
environment that points the backend at it; the Argo backend tests share it. No tests here.
"""

from __future__ import annotations

import copy
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

TOKEN = "s3cr3t-token-value"

GRPC_CODES = {401: 16, 403: 7, 404: 5, 409: 6}


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeArgo:
    """Scripted answers by ``(method, path)``; each answer is ``(status, json)``."""

    url: str = ""
    answers: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        self.answers.setdefault((method, path), []).append((status, body))

    def error(self, method: str, path: str, status: int, message: str) -> None:
        self.answer(method, path, status, {"code": GRPC_CODES.get(status, 2), "message": message})

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        path, _, query = req.path.partition("?")
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        self.seen.append(
            Seen(req.command, path, query, dict(req.headers), json.loads(raw) if raw else None)
        )
        queue = self.answers.get((req.command, path))
        status, body = queue.pop(0) if queue else (404, {"code": 5, "message": "not found"})
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


def _serve(fake: FakeArgo, tls: ssl.SSLContext | None = None) -> Iterator[FakeArgo]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            fake.handle(self)

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def created(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """What the Argo Server answers to a create: the object with its name and uid filled in."""
    doc = copy.deepcopy(manifest)
    doc["metadata"].pop("generateName", None)
    doc["metadata"].update(name=name, uid="0b7c", resourceVersion="4711")
    return doc


def env_for(fake: FakeArgo, **extra: str) -> dict[str, str]:
    return {"ARGO_SERVER": fake.url, "ARGO_TOKEN": TOKEN, **extra}

"""A loopback server speaking just enough of KFP's v2beta1 REST API: state in memory, every
request recorded. The KFP backend tests run ``make submit/schedule BACKEND=kfp`` against it.
No tests here.
"""

from __future__ import annotations

import json
import uuid
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "s3cret-token-value"
API = "/apis/v2beta1"


class FakeKfp(ThreadingHTTPServer):
    """Just enough of the KFP API server: state in memory, every request recorded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token: str | None = TOKEN
        self.multi_user = False
        self.forbid_uploads = False
        self.requests: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.experiments: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.recurring: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeKfp

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        s = self.server
        s.requests.append(
            {
                "method": method,
                "path": url.path,
                "query": query,
                "auth": self.headers.get("Authorization"),
            }
        )
        if s.token and self.headers.get("Authorization") != f"Bearer {s.token}":
            return self._reply(
                401, {"error": "Unauthorized", "code": 16, "message": "Unauthenticated"}
            )
        parts = url.path.removeprefix(API).strip("/").split("/")
        for route in (self._pipelines_route, self._experiments_route, self._recurring_route):
            if route(method, parts, query, body):
                return None
        return self._reply(404, {"error": f"no route {method} {url.path}", "code": 5})

    def _pipelines_route(
        self, method: str, parts: list[str], query: dict[str, str], body: bytes
    ) -> bool:
        """The health check, uploads, and looking pipelines and their versions up by name."""
        s = self.server
        if method == "GET" and parts == ["healthz"]:
            self._reply(200, {"commit_sha": "test", "multi_user": s.multi_user})
            return True
        if (
            method == "POST"
            and parts[:2] == ["pipelines", "upload"]
            or parts == ["pipelines", "upload_version"]
        ):
            if s.forbid_uploads:
                self._reply(
                    403,
                    {
                        "error": "forbidden",
                        "code": 7,
                        "message": "user is not authorized in namespace",
                    },
                )
                return True
            self._upload(parts[1], query, body)
            return True
        if method == "GET" and parts == ["pipelines"]:
            name = _filtered_name(query)
            found = [p for p in s.pipelines.values() if p["display_name"] == name]
            self._reply(200, {"pipelines": found} if found else {})
            return True
        if (
            method == "GET"
            and len(parts) == 3
            and parts[0] == "pipelines"
            and parts[2] == "versions"
        ):
            name = _filtered_name(query)
            found = [v for v in s.versions.get(parts[1], []) if v["display_name"] == name]
            self._reply(200, {"pipeline_versions": found} if found else {})
            return True
        return False

    def _experiments_route(
        self, method: str, parts: list[str], query: dict[str, str], body: bytes
    ) -> bool:
        """Experiments looked up by name or created, and runs started."""
        s = self.server
        if parts == ["experiments"]:
            if method == "GET":
                name = _filtered_name(query)
                found = [e for e in s.experiments if e["display_name"] == name]
                self._reply(200, {"experiments": found} if found else {})
                return True
            exp = {**json.loads(body), "experiment_id": f"exp-{len(s.experiments)}"}
            s.experiments.append(exp)
            self._reply(200, exp)
            return True
        if method == "POST" and parts == ["runs"]:
            run = {**json.loads(body), "run_id": str(uuid.uuid4()), "state": "PENDING"}
            s.runs.append(run)
            self._reply(200, run)
            return True
        return False

    def _recurring_route(
        self, method: str, parts: list[str], query: dict[str, str], body: bytes
    ) -> bool:
        """Recurring runs looked up by name in an experiment, created, and deleted."""
        s = self.server
        if parts == ["recurringruns"]:
            if method == "GET":
                name = _filtered_name(query)
                found = [
                    r
                    for r in s.recurring.values()
                    if r["display_name"] == name
                    and r["experiment_id"] == query.get("experiment_id")
                ]
                self._reply(200, {"recurringRuns": found} if found else {})
                return True
            job = {**json.loads(body), "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            s.recurring[job["recurring_run_id"]] = job
            self._reply(200, job)
            return True
        if method == "DELETE" and parts[0] == "recurringruns":
            s.deleted.append(parts[1])
            s.recurring.pop(parts[1])
            self._reply(200, {})
            return True
        return False

    def _upload(self, kind: str, query: dict[str, str], body: bytes) -> None:
        s = self.server
        ctype = self.headers["Content-Type"].encode()
        msg = BytesParser(policy=policy.default).parsebytes(
            b"Content-Type: " + ctype + b"\r\n\r\n" + body
        )
        (part,) = [
            p
            for p in msg.iter_parts()
            if p.get_param("name", header="content-disposition") == "uploadfile"
        ]
        data = part.get_payload(decode=True)
        s.uploads.append(
            {"kind": kind, "query": query, "filename": part.get_filename(), "data": data}
        )
        if kind == "upload":
            pid = str(uuid.uuid4())
            s.pipelines[pid] = {"pipeline_id": pid, "display_name": query["name"]}
            first = {
                "pipeline_id": pid,
                "pipeline_version_id": str(uuid.uuid4()),
                "display_name": query["name"],
            }
            s.versions[pid] = [first]
            return self._reply(200, s.pipelines[pid])
        pid = query["pipelineid"]
        version = {
            "pipeline_id": pid,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": query["name"],
        }
        s.versions[pid].append(version)
        return self._reply(200, version)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def _filtered_name(query: dict[str, str]) -> str | None:
    if "filter" not in query:
        return None
    (pred,) = json.loads(query["filter"])["predicates"]
    assert pred["key"] == "display_name" and pred["operation"] in ("EQUALS", 1)
    return str(pred["stringValue"])

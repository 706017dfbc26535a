"""make submit/schedule BACKEND=kfp, against a loopback server speaking KFP's v2beta1 REST API."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.backends import kfp as backend
from pipelines.build.kfp import compile_package
from pipelines.cli import COMPILED
from pipelines.cli import main as cli_main
from pipelines.config import SweepConfig, load_config

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
        if method == "GET" and parts == ["healthz"]:
            return self._reply(200, {"commit_sha": "test", "multi_user": s.multi_user})
        if (
            method == "POST"
            and parts[:2] == ["pipelines", "upload"]
            or parts == ["pipelines", "upload_version"]
        ):
            if s.forbid_uploads:
                return self._reply(
                    403,
                    {
                        "error": "forbidden",
                        "code": 7,
                        "message": "user is not authorized in namespace",
                    },
                )
            return self._upload(parts[1], query, body)
        if method == "GET" and parts == ["pipelines"]:
            name = _filtered_name(query)
            found = [p for p in s.pipelines.values() if p["display_name"] == name]
            return self._reply(200, {"pipelines": found} if found else {})
        if (
            method == "GET"
            and len(parts) == 3
            and parts[0] == "pipelines"
            and parts[2] == "versions"
        ):
            name = _filtered_name(query)
            found = [v for v in s.versions.get(parts[1], []) if v["display_name"] == name]
            return self._reply(200, {"pipeline_versions": found} if found else {})
        if parts == ["experiments"]:
            if method == "GET":
                name = _filtered_name(query)
                found = [e for e in s.experiments if e["display_name"] == name]
                return self._reply(200, {"experiments": found} if found else {})
            exp = {**json.loads(body), "experiment_id": f"exp-{len(s.experiments)}"}
            s.experiments.append(exp)
            return self._reply(200, exp)
        if method == "POST" and parts == ["runs"]:
            run = {**json.loads(body), "run_id": str(uuid.uuid4()), "state": "PENDING"}
            s.runs.append(run)
            return self._reply(200, run)
        if parts == ["recurringruns"]:
            if method == "GET":
                name = _filtered_name(query)
                found = [
                    r
                    for r in s.recurring.values()
                    if r["display_name"] == name
                    and r["experiment_id"] == query.get("experiment_id")
                ]
                return self._reply(200, {"recurringRuns": found} if found else {})
            job = {**json.loads(body), "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            s.recurring[job["recurring_run_id"]] = job
            return self._reply(200, job)
        if method == "DELETE" and parts[0] == "recurringruns":
            s.deleted.append(parts[1])
            s.recurring.pop(parts[1])
            return self._reply(200, {})
        return self._reply(404, {"error": f"no route {method} {url.path}", "code": 5})

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


@pytest.fixture
def kfp_api() -> Iterator[FakeKfp]:
    server = FakeKfp()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cfg() -> SweepConfig:
    return load_config("sweep")


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads ~/.config/kfp/context.json: keep the user's out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import kfp.client.client as kfp_client

    monkeypatch.setattr(
        kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "home/context.json")
    )


GOLDEN = COMPILED / "sweep.kfp.yaml"


def env(server: FakeKfp, **extra: str) -> dict[str, str]:
    return {"KFP_HOST": server.url, "KFP_TOKEN": TOKEN, **extra}


def test_submit_uploads_the_compiled_package_once_and_starts_runs(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api)) == 0
    golden = GOLDEN.read_bytes()
    version = f"sweep-{hashlib.sha256(golden).hexdigest()[:12]}"
    assert [u["kind"] for u in kfp_api.uploads] == ["upload", "upload_version"]
    assert all(u["data"] == golden for u in kfp_api.uploads), (
        "the uploaded package is the compiled one"
    )
    assert kfp_api.uploads[0]["query"]["name"] == "sweep"
    assert kfp_api.uploads[1]["query"]["name"] == version
    (pipeline,) = kfp_api.pipelines.values()
    ours = kfp_api.versions[pipeline["pipeline_id"]][-1]
    (run,) = kfp_api.runs
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": ours["pipeline_version_id"],
    }
    assert run["runtime_config"].get("parameters", {}) == {}
    assert run["experiment_id"] == "exp-0" and kfp_api.experiments[0]["display_name"] == "sweep"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in kfp_api.requests)
    out = capsys.readouterr()
    assert f"KFP run {run['run_id']}" in out.out
    assert f"{kfp_api.url}/#/runs/details/{run['run_id']}" in out.out
    assert TOKEN not in out.out + out.err

    # Resubmitting (a resume) reuses the pipeline, the version and the experiment.
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id="digits-1", env=env(kfp_api)) == 0
    assert len(kfp_api.uploads) == 2 and len(kfp_api.experiments) == 1
    assert kfp_api.runs[1]["runtime_config"]["parameters"] == {"sweep_id": "digits-1"}
    assert kfp_api.runs[1]["pipeline_version_reference"] == run["pipeline_version_reference"]


def test_schedule_creates_one_recurring_run_with_the_translated_cron(
    kfp_api: FakeKfp, cfg: SweepConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.schedule(GOLDEN, cfg=cfg, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    (job,) = kfp_api.recurring.values()
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}  # from "0 3 * * *"
    assert str(job["max_concurrency"]) == "1"
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "sweep-schedule"
    assert kfp_api.experiments[0]["display_name"] == "nightly"
    assert kfp_api.uploads[-1]["data"] == GOLDEN.read_bytes()
    assert "0 0 3 * * *" in capsys.readouterr().out

    # Unchanged: nothing new. A new package (another image): the old schedule is replaced.
    assert backend.schedule(GOLDEN, cfg=cfg, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    assert list(kfp_api.recurring) == [job["recurring_run_id"]]
    assert "up to date" in capsys.readouterr().out
    other = load_config("sweep", image="registry.example.com/sweepyard:2")
    package = tmp_path / "sweep.kfp.yaml"
    compile_package(other, package)
    assert backend.schedule(package, cfg=other, env=env(kfp_api, KFP_EXPERIMENT="nightly")) == 0
    assert kfp_api.deleted == [job["recurring_run_id"]]
    (new,) = kfp_api.recurring.values()
    assert (
        new["pipeline_version_reference"]["pipeline_version_id"]
        != job["pipeline_version_reference"]["pipeline_version_id"]
    )
    assert kfp_api.uploads[-1]["data"] == package.read_bytes()


def test_schedule_and_submit_through_the_cli(
    kfp_api: FakeKfp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KFP_HOST", kfp_api.url)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    monkeypatch.delenv("ARGO_SERVER", raising=False)
    assert cli_main(["schedule", "--pipeline", "sweep", "--backend", "kfp"]) == 0
    (job,) = kfp_api.recurring.values()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert kfp_api.uploads[-1]["data"] == GOLDEN.read_bytes(), "the CLI uploads the golden package"
    assert cli_main(["submit", "--pipeline", "sweep", "--backend", "kfp", "--sweep-id", "s-1"]) == 0
    (run,) = kfp_api.runs
    assert run["runtime_config"]["parameters"] == {"sweep_id": "s-1"}
    assert len(kfp_api.uploads) == 2, "same package: the version is reused"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_clean_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert TOKEN not in out.err + out.out
    for needle in needles:
        assert needle in out.err, out.err
    return out.err


def test_unreachable_host_names_the_host_and_what_to_do(
    cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{_free_port()}"
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": host, "KFP_TOKEN": TOKEN})
        == 1
    )
    _assert_clean_error(
        capsys, f"cannot reach Kubeflow Pipelines at {host}", "KFP_HOST", "port-forward"
    )
    assert backend.schedule(GOLDEN, cfg=cfg, env={"KFP_HOST": host}) == 1
    _assert_clean_error(capsys, f"cannot reach Kubeflow Pipelines at {host}")


def test_401_asks_for_a_token(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": kfp_api.url}) == 1
    _assert_clean_error(capsys, f"KFP at {kfp_api.url} answered 401 Unauthorized", "set KFP_TOKEN")
    bad = {"KFP_HOST": kfp_api.url, "KFP_TOKEN": "expired"}
    assert backend.schedule(GOLDEN, cfg=cfg, env=bad) == 1
    _assert_clean_error(capsys, "401 Unauthorized", "the token was rejected", "Unauthenticated")
    assert not kfp_api.uploads and not kfp_api.recurring


def test_403_names_the_namespace(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_api.forbid_uploads = True
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api, KFP_NAMESPACE="team-a"))
        == 1
    )
    _assert_clean_error(
        capsys,
        f"KFP at {kfp_api.url} answered 403 Forbidden when trying to upload the pipeline",
        "namespace team-a",
        "not authorized in namespace",
    )
    assert not kfp_api.runs


def test_configuration_errors_are_caught_before_anything_is_sent(
    kfp_api: FakeKfp, cfg: SweepConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={}) == 1
    _assert_clean_error(capsys, "KFP_HOST is not set")
    assert (
        backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env={"KFP_HOST": "kubeflow.example.com"})
        == 1
    )
    _assert_clean_error(capsys, "must start with http:// or https://")
    kfp_api.multi_user = True
    assert backend.submit(GOLDEN, cfg=cfg, sweep_id=None, env=env(kfp_api)) == 1
    _assert_clean_error(capsys, "multi-user: set KFP_NAMESPACE")
    berlin = cfg.model_copy(
        update={"schedule": cfg.schedule.model_copy(update={"timezone": "Europe/Berlin"})}
    )  # type: ignore[union-attr]
    assert backend.schedule(GOLDEN, cfg=berlin, env=env(kfp_api)) == 1
    _assert_clean_error(capsys, "'Europe/Berlin'", "CRON_SCHEDULE_TIMEZONE")
    assert not kfp_api.uploads and not kfp_api.runs and not kfp_api.recurring
    assert (
        backend.submit(
            Path("/nonexistent/sweep.kfp.yaml"),
            cfg=cfg,
            sweep_id=None,
            env=env(kfp_api, KFP_NAMESPACE="a"),
        )
        == 1
    )
    _assert_clean_error(capsys, "cannot read the KFP package /nonexistent/sweep.kfp.yaml")

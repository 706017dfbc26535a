"""``make schedule`` and ``make status`` with BACKEND=argo, against the loopback Argo Server of
test_argo_backend.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends import argo
from pipelines.config import load_config
from tests.support.argo import TOKEN, FakeArgo, _serve, created, env_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_argo() -> Iterator[FakeArgo]:
    yield from _serve(FakeArgo())


@pytest.fixture(scope="module")
def cfg() -> Any:
    return load_config("sweep")


@pytest.fixture
def cron_manifest() -> dict[str, Any]:
    return yaml.safe_load((REPO / "pipelines" / "compiled" / "sweep-cron.yaml").read_text())


def test_schedule_creates_the_cron_workflow(
    fake_argo: FakeArgo, cfg: Any, cron_manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_argo.answer(
        "POST", "/api/v1/cron-workflows/sweepyard", 200, created(cron_manifest, "sweep")
    )
    assert argo.schedule(cron_manifest, cfg=cfg, env=env_for(fake_argo)) == 0
    [req] = fake_argo.seen
    assert req.body == {"cronWorkflow": cron_manifest}
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    out = capsys.readouterr().out
    assert "created cron workflow sweep in namespace sweepyard" in out
    assert "(schedule 0 3 * * *)" in out
    assert f"{fake_argo.url}/cron-workflows/sweepyard/sweep" in out


def test_schedule_updates_an_existing_cron_workflow(
    fake_argo: FakeArgo, cfg: Any, cron_manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = "/api/v1/cron-workflows/sweepyard"
    fake_argo.error("POST", path, 409, 'cronworkflows.argoproj.io "sweep" already exists')
    existing = created(cron_manifest, "sweep")
    existing["metadata"]["resourceVersion"] = "991"
    fake_argo.answer("GET", f"{path}/sweep", 200, existing)
    fake_argo.answer("PUT", f"{path}/sweep", 200, existing)

    assert argo.schedule(cron_manifest, cfg=cfg, env=env_for(fake_argo)) == 0

    post, get, put = fake_argo.seen
    assert (post.method, get.method, put.method) == ("POST", "GET", "PUT")
    assert put.path == f"{path}/sweep"
    expected = copy.deepcopy(cron_manifest)
    expected["metadata"]["resourceVersion"] = "991"
    assert put.body == {"cronWorkflow": expected, "name": "sweep"}
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in fake_argo.seen)
    assert "updated cron workflow sweep" in capsys.readouterr().out


def test_schedule_refused_is_a_clear_error(
    fake_argo: FakeArgo, cfg: Any, cron_manifest: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_argo.error("POST", "/api/v1/cron-workflows/sweepyard", 403, "cronworkflows is forbidden")
    assert argo.schedule(cron_manifest, cfg=cfg, env=env_for(fake_argo)) != 0
    err = capsys.readouterr().err
    assert "cannot create cron workflow sweep" in err and "403 Forbidden" in err


def _node(
    node_id: str, type_: str, phase: str, trial: str | None, **extra: Any
) -> tuple[str, dict[str, Any]]:
    node: dict[str, Any] = {
        "id": node_id,
        "name": f"sweep-new.{node_id}",
        "displayName": node_id,
        "type": type_,
        "phase": phase,
        "templateName": "train" if trial else "plan",
        **extra,
    }
    if trial:
        node["inputs"] = {"parameters": [{"name": "trial-id", "value": trial}]}
    return node_id, node


def test_status_prints_the_trials_of_the_newest_workflow(
    fake_argo: FakeArgo, cfg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = {
        "metadata": {},
        "items": [
            {
                "metadata": {"name": "sweep-old", "creationTimestamp": "2026-11-20T10:00:00Z"},
                "spec": {"entrypoint": "main"},
            },
            {
                "metadata": {"name": "sweep-new", "creationTimestamp": "2026-11-26T09:00:00Z"},
                "spec": {"entrypoint": "main"},
            },
        ],
    }
    fake_argo.answer("GET", "/api/v1/workflows/sweepyard", 200, listing)
    nodes = dict(
        [
            _node("plan", "Pod", "Succeeded", None),
            _node(
                "t1",
                "Retry",
                "Succeeded",
                "aaaaaaaaaaaa",
                children=["t1-0", "t1-1", "t1-2"],
                startedAt="2026-11-26T09:01:00Z",
            ),
            _node("t1-0", "Pod", "Failed", "aaaaaaaaaaaa", message="pod deleted"),
            _node("t1-1", "Pod", "Failed", "aaaaaaaaaaaa"),
            _node("t1-2", "Pod", "Succeeded", "aaaaaaaaaaaa"),
            _node(
                "t2",
                "Retry",
                "Running",
                "bbbbbbbbbbbb",
                children=["t2-0"],
                startedAt="2026-11-26T09:02:00Z",
            ),
            _node("t2-0", "Pod", "Running", "bbbbbbbbbbbb"),
        ]
    )
    wf = {
        "metadata": {"name": "sweep-new", "namespace": "sweepyard"},
        "spec": {},
        "status": {"phase": "Running", "progress": "3/5", "nodes": nodes},
    }
    fake_argo.answer("GET", "/api/v1/workflows/sweepyard/sweep-new", 200, wf)

    assert argo.status(cfg=cfg, env=env_for(fake_argo)) == 0

    listed, got = fake_argo.seen
    assert "listOptions.labelSelector=sweepyard.io%2Fpipeline%3Dsweep" in listed.query
    assert got.path == "/api/v1/workflows/sweepyard/sweep-new"
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "workflow sweep-new (Running), progress 3/5"
    rows = [line.split() for line in lines if line.startswith(("aaaa", "bbbb"))]
    assert rows == [["aaaaaaaaaaaa", "Succeeded", "3"], ["bbbbbbbbbbbb", "Running", "1"]]
    assert "2 trials: 1 Running, 1 Succeeded" in out


def test_status_without_any_submission(
    fake_argo: FakeArgo, cfg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_argo.answer("GET", "/api/v1/workflows/sweepyard", 200, {"metadata": {}, "items": None})
    assert argo.status(cfg=cfg, env=env_for(fake_argo)) == 0
    assert "no workflows of pipeline 'sweep' in namespace sweepyard" in capsys.readouterr().out


def test_status_unauthorized(
    fake_argo: FakeArgo, cfg: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_argo.error("GET", "/api/v1/workflows/sweepyard", 401, "Unauthorized")
    assert argo.status(cfg=cfg, env={"ARGO_SERVER": fake_argo.url}) != 0
    err = capsys.readouterr().err
    assert "cannot list workflows" in err and "Set ARGO_TOKEN" in err
    assert "Authorization" not in fake_argo.seen[0].headers

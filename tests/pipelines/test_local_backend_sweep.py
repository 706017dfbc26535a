"""End to end: the real default sweep (pipelines.build.argo.build of a small config) runs locally.

The compiled manifest and the real components (plan, fetch, train, compare, notify) run against a
real MLflow server on loopback, with and without preemption injection; every trial ends done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.backends import local
from pipelines.backends.local import RunResult, run_workflow
from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.config import load_config
from tests.conftest import REPO
from tests.support.local_sweep import (
    CHAOS_SEED,
    CHAOS_WINDOW,
    CONFIG,
    manifest,
    preemptions_ended_as_kills,
)


def check_every_trial_done(result: RunResult, shared: Path, sweep_id: str) -> list[dict[str, Any]]:
    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    trials = json.loads(result.nodes["plan"].outputs["trials"])
    assert len(trials) == 4
    assert {n.inputs["trial-id"] for n in result.pods("train")} == {t["id"] for t in trials}
    sweep = shared / "sweepyard-shared" / "sweeps" / sweep_id
    results = [json.loads((sweep / "trials" / t["id"] / "result.json").read_text()) for t in trials]
    assert [r["status"] for r in results] == ["done"] * 4
    assert all(r["objective"]["value"] is not None for r in results)
    assert (sweep / "summary.json").exists()
    assert result.nodes["compare"].phase == "Succeeded"
    assert result.nodes[f"{result.name}.onExit"].phase == "Succeeded"
    return results


@pytest.mark.slow
def test_default_sweep_runs_locally(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    shared = tmp_path / "shared"
    result = run_workflow(
        manifest(),
        run_dir=tmp_path / "run",
        shared_root=shared,
        env={"MLFLOW_TRACKING_URI": mlflow_server.url},
        cwd=REPO,
        progress=False,
    )

    check_every_trial_done(result, shared, sweep_id=result.name)
    assert all(len(n.attempts) == 1 for n in result.pods())
    # the steps logged to the server we gave, not to the manifest's in-cluster URL
    train_log = (result.run_dir / "logs" / "train(0)-0.log").read_text()
    assert "mlflow.sweepyard.svc" not in train_log


@pytest.mark.slow
def test_default_sweep_with_preemptions_through_submit(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("SWEEPYARD_SHARED", raising=False)

    code = local_cli.submit(
        manifest(),
        sweep_id="chaos-sweep",
        chaos=0.5,
        project_root=tmp_path,
        seed=CHAOS_SEED,
        chaos_window=CHAOS_WINDOW,
        progress=False,
    )

    assert code == 0
    (run_dir,) = (tmp_path / ".sweepyard" / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "Succeeded" and state["sweep_id"] == "chaos-sweep"
    train = [n for n in state["nodes"] if n["template"] == "train" and n["type"] == "Pod"]
    assert preemptions_ended_as_kills(train), "the seed preempts at least train(0)'s first attempt"
    assert all(n["phase"] == "Succeeded" for n in train)
    shared = tmp_path / ".sweepyard" / "shared"
    for n in train:
        trial = n["inputs"]["trial-id"]
        result = json.loads(
            (
                shared
                / "sweepyard-shared"
                / "sweeps"
                / "chaos-sweep"
                / "trials"
                / trial
                / "result.json"
            ).read_text()
        )
        assert result["status"] == "done"

    capsys.readouterr()
    assert local.status(cfg=load_config(CONFIG), project_root=tmp_path) == 0
    shown = capsys.readouterr().out
    assert state["name"] in shown
    assert all(n["inputs"]["trial-id"] in shown for n in train)

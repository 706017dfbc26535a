"""The KFP package of an adaptive search (unrolled rounds behind ``dsl.If``) runs under kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.backends.mlflow_server import MlflowServer
from pipelines.config import SweepConfig, parse_config
from tests.support.kfp_local import run_kfp_local
from tests.support.receivers import Receiver

CONFIG = Path(__file__).parents[1] / "configs" / "kfp_tpe.yaml"
pytestmark = pytest.mark.slow


def config(shared: Path, mlflow_url: str) -> SweepConfig:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["cluster"] = {"mount_path": str(shared)}
    raw["tracking"]["mlflow_uri"] = mlflow_url
    return parse_config(raw, source=str(CONFIG))


def test_kfp_local_runs_the_rounds_until_the_study_has_max_trials(
    tmp_path: Path, mlflow_server: MlflowServer, slack: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    shared = tmp_path / "shared"
    run_kfp_local(config(shared, mlflow_server.url), tmp_path / "kfp", monkeypatch)
    (sweep,) = (shared / "sweeps").iterdir()
    plan = json.loads((sweep / "plan.json").read_text())
    assert len(plan) == 4  # max_trials, in two rounds of batch 2
    results = [json.loads((sweep / "trials" / t["id"] / "result.json").read_text()) for t in plan]
    assert {r["status"] for r in results} <= {"done", "pruned"} and "done" in {
        r["status"] for r in results
    }
    assert all(r["steps_run"] >= 5 for r in results)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "study.journal"))
    )
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    states = sorted(t.state.name for t in study.get_trials())
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}  # the last suggest told all
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["best"]["value"] == min(
        r["objective"]["value"] for r in results if r["status"] == "done"
    )
    assert len(slack.requests) == 1 and "Succeeded" in slack.requests[0].body.decode()

"""End to end: the failure budget decides how a sweep ends, as a team automating on it reads it.

A program that fails for some learning rates is swept through the local backend with a real MLflow
server and a loopback Slack receiver: past ``search.max_failed_trials`` no new trial starts, the
run exits non-zero, the parent run ends FAILED and the digest names the failed trial with its
error; within the budget the sweep succeeds and says how many failed of how many allowed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build
from pipelines.config import parse_config
from tests.conftest import REPO
from tests.support.receivers import Receiver, decode_body, receiving

PROGRAM = """
import sys
lr = float(sys.argv[1])
if lr >= 0.5:
    sys.exit(f"diverged: lr {lr} is too high")
print(f"val_loss={lr * 2}")
"""


def sweep(tmp_path: Path, grid: list[float], budget: int) -> dict[str, Any]:
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM)
    raw = yaml.safe_load((REPO / "pipelines" / "plain-stdout.yaml").read_text())
    raw.pop("data")
    raw.update(
        name="budget",
        parallelism=1,
        trainer={"command": ["python", str(program), "{lr}"], "params": {"lr": "float"},
                 "metrics": ["val_loss"], "collect": {"stdout": "name=value"}},
        retries={"preemptions": 2, "app_errors": 1, "backoff": {"duration": "1s"}},
        tracking={"experiment": f"budget-{budget}", "model_name": None},
    )  # fmt: skip
    raw["search"] = {"objective": {"metric": "val_loss"}, "max_failed_trials": budget,
                     "space": {"grid": {"lr": grid}}}  # fmt: skip
    return build(parse_config(raw)).to_dict()


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer) -> Iterator[Receiver]:
    with receiving() as receiver:
        for name in list(os.environ):
            if name.startswith(("SENTRY_", "SLACK_", "SWEEPYARD_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{receiver.url}/services/T/B/x")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        yield receiver


def run(doc: dict[str, Any], tmp_path: Path, sweep_id: str) -> tuple[int, dict[str, Any]]:
    code = local_cli.submit(
        doc, sweep_id=sweep_id, chaos=0.0, project_root=tmp_path, progress=False
    )
    folder = tmp_path / ".sweepyard" / "shared" / "sweepyard-shared" / "sweeps" / sweep_id
    return code, json.loads((folder / "summary.json").read_text())


def parent_status(mlflow_server: MlflowServer, experiment: str, sweep_id: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (run,) = client.search_runs(
        [exp.experiment_id],
        f"tags.`sweepyard.sweep_id` = '{sweep_id}' and tags.`sweepyard.role` = 'sweep'",
    )
    return str(run.info.status)


@pytest.mark.slow
def test_past_the_failure_budget_the_sweep_fails_and_no_new_trial_starts(
    tmp_path: Path, slack: Receiver, mlflow_server: MlflowServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run(sweep(tmp_path, [0.5, 0.1, 0.2, 0.6], budget=0), tmp_path, "over")
    assert code != 0
    assert summary["status"] == "failed"
    assert summary["trials"] == {"total": 4, "done": 0, "pruned": 0, "failed": 1, "skipped": 3}
    assert [f["error"] for f in summary["failed"]] == ["1 application errors, the last: "
                                                       "RuntimeError: the command 'python' "
                                                       "exited with 1"]  # fmt: skip
    assert parent_status(mlflow_server, "budget-0", "over") == "FAILED"
    (digest,) = slack.wait_for(1)
    text = json.dumps(json.loads(decode_body(digest)))
    assert summary["failed"][0]["trial_id"] in text and "exited with 1" in text
    assert "0 done / 1 failed (budget 0) / 3 not started (of 4)" in text


@pytest.mark.slow
def test_within_the_failure_budget_the_sweep_succeeds_and_says_so(
    tmp_path: Path, slack: Receiver, mlflow_server: MlflowServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run(sweep(tmp_path, [0.5, 0.1, 0.6, 0.2], budget=2), tmp_path, "within")
    assert code == 0
    assert summary["status"] == "succeeded" and summary["best"]["params"] == {"lr": 0.1}
    assert summary["trials"] == {"total": 4, "done": 2, "pruned": 0, "failed": 2, "skipped": 0}
    assert "2 failed (budget 2)" in capsys.readouterr().out
    assert parent_status(mlflow_server, "budget-2", "within") == "FINISHED"
    (digest,) = slack.wait_for(1)
    assert "2 done / 2 failed (budget 2) (of 4)" in json.dumps(json.loads(decode_body(digest)))

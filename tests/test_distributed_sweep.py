"""End to end: a 2-node x 2-process trial (``pipelines/charlm-ddp.yaml``) through the local backend.

The compiled manifest's train step creates a JobSet; the local backend runs its two pods as two
local "nodes", each a torchrun of two ranks (gloo). A preemption of one node restarts the whole
gang from its last complete sharded checkpoint; the trial is still one MLflow run with each
(metric, step) once, from rank 0, and its weights are bitwise those of an uninterrupted run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from pipelines.backends.local import run_workflow
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build
from pipelines.config import parse_config
from pipelines.validate import validate_or_raise
from tests.conftest import REPO

STEPS = 120


def manifest() -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "pipelines" / "charlm-ddp.yaml").read_text())
    raw["search"]["space"] = {
        "grid": {"lr": [0.003]},
        "fixed": {"steps": STEPS, "eval_every": 40, "d_model": 32, "n_layer": 1, "seed": 0},
    }
    raw["checkpoint"] = {"interval_seconds": 1, "keep": 2}
    raw["cluster"]["grace_seconds"] = 10
    raw["tracking"] = {"experiment": "distributed-sweep", "model_name": "charlm-ddp-test"}
    doc = build(parse_config(raw)).to_dict()
    validate_or_raise(doc, "charlm-ddp")
    return doc


def run(tmp_path: Path, sweep: str, url: str, **kwargs: Any) -> Any:
    return run_workflow(
        manifest(),
        run_dir=tmp_path / "runs" / sweep,
        shared_root=tmp_path / "shared",
        env={"MLFLOW_TRACKING_URI": url},
        parameters={"sweep-id": sweep},
        cwd=REPO,
        progress=False,
        **kwargs,
    )


@pytest.mark.slow
def test_a_preempted_node_restarts_the_gang_and_changes_nothing(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    from mlflow.tracking import MlflowClient

    reference = run(tmp_path, "ddp-reference", mlflow_server.url)
    assert reference.status == "Succeeded", {n.name: n.message for n in reference.nodes.values()}
    # seed 1 preempts the first launch of train(0) (0.59 x the window in) and not the second
    chaotic = run(tmp_path, "ddp-chaos", mlflow_server.url, chaos=0.5, seed=1, chaos_window=12)
    train = chaotic.nodes["train(0)"]
    assert chaotic.status == "Succeeded", train.message
    assert [a.preempted for a in train.attempts] == [True, False], [
        a.to_dict() for a in train.attempts
    ]
    assert "DisruptionTarget" in train.attempts[0].message or "exit code 143" in (
        train.attempts[0].message
    )

    sweeps = tmp_path / "shared" / "sweepyard-shared" / "sweeps"
    weights = []
    for sweep in ("ddp-reference", "ddp-chaos"):
        summary = json.loads((sweeps / sweep / "summary.json").read_text())
        assert summary["status"] == "succeeded"
        [row] = summary["leaderboard"]
        tdir = sweeps / sweep / "trials" / row["trial_id"]
        result = json.loads((tdir / "result.json").read_text())
        assert result["status"] == "done" and result["step"] == STEPS
        # the gang restart is the trial's one preemption (never an application error)
        assert (result["preemptions"], result["app_errors"]) == (
            (1, 0) if sweep == "ddp-chaos" else (0, 0)
        )
        client = MlflowClient(mlflow_server.url)
        run_ = client.get_run(row["run_id"])
        runs = client.search_runs(
            [run_.info.experiment_id],
            f"tags.`sweepyard.trial_id` = '{row['trial_id']}' and tags.`sweepyard.sweep_id` = '{sweep}'",
        )
        assert [r.info.run_id for r in runs] == [row["run_id"]]  # one run for the whole gang
        counts = Counter(m.step for m in client.get_metric_history(row["run_id"], "train_loss"))
        assert sorted(counts) == list(range(1, STEPS + 1)) and max(counts.values()) == 1
        val = [m.step for m in client.get_metric_history(row["run_id"], "val_loss")]
        assert sorted(val) == [40, 80, 120]
        weights.append(torch.load(tdir / "model" / "weights.pt", weights_only=True))
    ref, got = weights
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"{key} differs after the gang restart"

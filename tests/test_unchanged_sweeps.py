"""End to end: unchanged programs swept with YAML only, through the local backend, under CHAOS.

One sweep per kind of program (``examples/programs/``): Katib-style ``name=value`` lines, only
TensorBoard events, free-form lines matched by regexes. Each runs its compiled manifest here with
preemptions injected, against a real MLflow server; every (metric, step) must reach MLflow and the
sweep's TensorBoard folder once, and the leaderboard must rank every trial.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build
from pipelines.config import parse_config
from pipelines.validate import validate_or_raise
from tests.conftest import REPO
from tests.support.local_sweep import preemptions_ended_as_kills
from tests.support.programs import FREEFORM
from tests.support.train import tb_scalars

PROGRAMS = REPO / "examples" / "programs"
EPOCHS = 30


def config(name: str, program: str, collect: dict[str, Any], metrics: list[str]) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "pipelines" / "plain-stdout.yaml").read_text())
    raw["name"] = name
    raw.pop("data")
    raw["trainer"] = {
        "command": ["python", "-u", str(PROGRAMS / program), "--lr", "{lr}", "--hidden",
                    "{hidden}", "--epochs", "{epochs}", "--sleep", "0.1"],
        "params": ["lr", "hidden", "epochs"],
        "metrics": metrics,
        "collect": collect,
    }  # fmt: skip
    raw["search"]["space"] = {
        "grid": {"lr": [0.1], "hidden": [16, 48]},
        "fixed": {"epochs": EPOCHS},
    }
    raw["tracking"] = {"experiment": f"unchanged-{name}", "model_name": name}
    raw["cluster"] = {"grace_seconds": 5}
    return raw


CASES = {
    "name-value": (config("name-value", "mlp_stdout.py", {"stdout": "name=value"},
                          ["loss", "val_loss", "val_accuracy"]), "val_loss", 1),
    "tensorboard": (config("tensorboard", "mlp_tensorboard.py", {"tensorboard": "runs"},
                           ["loss", "val_loss", "val_accuracy"]), "val_loss", 3),
    "regex": (config("regex", "mlp_freeform.py", {"stdout": FREEFORM},
                     [*FREEFORM]), "train_loss", 1),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unchanged_program_sweeps_under_chaos_each_step_once(
    case: str, tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    raw, metric, seed = CASES[case]
    cfg = parse_config(raw)
    doc = build(cfg).to_dict()
    validate_or_raise(doc, case)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("SWEEPYARD_SHARED", raising=False)
    sweep = f"unchanged-{case}"
    code = local_cli.submit(
        doc, sweep_id=sweep, chaos=0.5, project_root=tmp_path, seed=seed, progress=False
    )
    assert code == 0
    (run_dir,) = (tmp_path / ".sweepyard" / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    train = [n for n in state["nodes"] if n["template"] == "train" and n["type"] == "Pod"]
    assert preemptions_ended_as_kills(train), f"seed {seed} preempts no attempt of {case}"
    folder = tmp_path / ".sweepyard" / "shared" / "sweepyard-shared"
    summary = json.loads((folder / "sweeps" / sweep / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert [row["rank"] for row in summary["leaderboard"]] == [1, 2]
    client = MlflowClient(mlflow_server.url)
    for row in summary["leaderboard"]:
        history = client.get_metric_history(row["run_id"], metric)
        counts = Counter(m.step for m in history)
        assert sorted(counts) == list(range(1, EPOCHS + 1)), (row["trial_id"], sorted(counts))
        assert max(counts.values()) == 1, f"{row['trial_id']}: a step logged twice in MLflow"
        (tb,) = (folder / "tensorboard" / sweep).glob(f"{row['trial_id']}*")
        steps = [s for s, _ in tb_scalars(tb, metric)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (row["trial_id"], steps)

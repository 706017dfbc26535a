"""The supervisor's pruning hooks (CONTRACT-pruning.md) with a stand-in pruner, both trainer kinds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from components.api import Trial
from components.contract import trial_id
from components.runtime import trial_run
from components.runtime.command_trainer import HARNESS_CHECKPOINTS, command_trainer
from components.runtime.function_trainer import function_trainer
from components.runtime.trial import StopSignal
from components.runtime.trial_run import TrialSpec, run_trial

CALLS: list[int] = []


class FakePruner:
    """Prunes once ``loss`` has been reported at ``at`` or later; remembers its decision."""

    metric = "loss"

    def __init__(self, at: int, decided: int | None = None) -> None:
        self.at, self.decided = at, decided
        self.reported: dict[int, float] = {}

    def report(self, step: int, value: float) -> bool:
        self.reported[step] = value
        if step >= self.at:
            self.decided = step
        return self.decided is not None

    def pruned_at(self) -> int | None:
        return self.decided


def toy_train(trial: Trial, *, steps: int = 50) -> None:
    """Logs a falling loss every step."""
    for step in range(trial.start_step + 1, steps + 1):
        CALLS.append(step)
        trial.log(step, {"loss": 1.0 / step, "aux": float(step)})
        trial.checkpoint(step, lambda s=step: {"step": s})


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pruner: FakePruner, **kw: Any) -> int:
    params = {"steps": 50}
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path / "shared"))
    monkeypatch.setattr(trial_run, "from_spec", lambda spec, **_: pruner if spec else None)
    spec = TrialSpec(
        sweep_id="s1", trial_id=trial_id(params), params=params, data=tmp_path,
        data_hash="", objective="loss", pruner={"metric": "loss", "rule": "fake"},
        checkpoint_interval=3600, flush_timeout=20,
    )  # fmt: skip
    if "command" in kw:
        spec.checkpoint_dir = HARNESS_CHECKPOINTS
        return run_trial(spec, StopSignal(), command_trainer(kw["command"]), lambda p: None)
    train, validate = function_trainer("tests.components.test_pruning_hooks:toy_train")
    return run_trial(spec, StopSignal(), train, validate)


def result(tmp_path: Path) -> dict[str, Any]:
    tdir = tmp_path / "shared" / "sweeps" / "s1" / "trials" / trial_id({"steps": 50})
    return dict(json.loads((tdir / "result.json").read_text()))


def test_a_pruned_python_trial_stops_at_the_step_and_its_run_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: Any
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "pruning")
    CALLS.clear()
    pruner = FakePruner(at=4)
    assert run(tmp_path, monkeypatch, pruner) == 0
    assert CALLS == [1, 2, 3, 4] and sorted(pruner.reported) == [1, 2, 3, 4]
    doc = result(tmp_path)
    assert doc["status"] == "pruned" and doc["pruned_at_step"] == 4 and doc["step"] == 4
    assert doc["metrics"] == {"aux": 4.0, "loss": 0.25} and doc["objective"]["value"] == 0.25
    run_info = MlflowClient(mlflow_server.url).get_run(doc["run_id"])
    assert run_info.info.status == "KILLED"
    assert run_info.data.tags["sweepyard.status"] == "pruned"
    assert run_info.data.tags["sweepyard.pruned_at_step"] == "4"
    # Submitted again (a retry after the decision): nothing runs.
    CALLS.clear()
    assert run(tmp_path, monkeypatch, FakePruner(at=1)) == 0 and CALLS == []


def test_an_earlier_decision_ends_the_attempt_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    CALLS.clear()
    assert run(tmp_path, monkeypatch, FakePruner(at=99, decided=7)) == 0
    assert CALLS == []
    doc = result(tmp_path)
    assert doc["status"] == "pruned" and doc["pruned_at_step"] == 7


def test_a_pruned_command_gets_sigterm_and_the_trial_ends_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    program = (
        "import json, os, time\n"
        "with open(os.environ['SWEEPYARD_METRICS'], 'a') as f:\n"
        "    for step in range(1, 1001):\n"
        "        f.write(json.dumps({'step': step, 'loss': 1 / step}) + '\\n'); f.flush()\n"
        "        time.sleep(0.02)\n"
    )
    pruner = FakePruner(at=5)
    assert run(tmp_path, monkeypatch, pruner, command=[sys.executable, "-c", program]) == 0
    doc = result(tmp_path)
    assert doc["status"] == "pruned" and doc["pruned_at_step"] == 5
    assert 5 <= doc["step"] < 1000  # the program was stopped long before its end

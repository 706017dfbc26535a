"""A sweep's budgets: past the failure (or cost) budget no new trial starts, the started ones finish."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from components.budget import Budget, costs, spent
from components.contract import trial_dir, trial_id
from components.cost import Resources
from components.leaderboard import load_trials, rank, to_markdown
from components.summary import outcomes
from tests.support.train import REPO, train_env


def result(shared: Path, params: dict[str, Any], status: str, **more: Any) -> str:
    tid = trial_id(params)
    folder = trial_dir(shared, "s1", tid)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"trial_id": tid, "params": params, "status": status, "metrics": {"val_loss": 0.5},
           "objective": {"metric": "val_loss", "value": 0.5 if status == "done" else None},
           **more}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(doc))
    return tid


def test_failed_trials_past_the_budget_spend_it_and_nothing_else_does(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    result(shared, {"lr": 1}, "done")
    result(shared, {"lr": 2}, "pruned")
    result(shared, {"lr": 3}, "skipped")
    assert spent(shared, "s1", Budget(max_failed_trials=0)) is None
    result(shared, {"lr": 4}, "failed", error="RuntimeError: boom")
    assert spent(shared, "s1", Budget(max_failed_trials=1)) is None
    why = spent(shared, "s1", Budget(max_failed_trials=0))
    assert why == (
        "the sweep's failure budget is spent: 1 trials failed, more than max_failed_trials=0"
    )


def test_the_cost_budget_is_read_from_the_trials_attempts(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    folder = trial_dir(shared, "s1", "a" * 12)
    folder.mkdir(parents=True)
    records = [{"event": "start", "id": "x", "time": 0.0, "lost": 0},
               {"event": "end", "id": "x", "time": 3600.0, "outcome": "done"}]  # fmt: skip
    (folder / "attempts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    one_l4 = Resources("nvidia-l4", 1, 4.0, True)
    total = costs(shared, "s1", Budget(resources=one_l4))
    assert total["gpu_hours"] == 1.0 and total["cost"] > 0
    assert spent(shared, "s1", Budget(resources=one_l4, max_cost=total["cost"] * 2)) is None
    assert "cost budget is spent" in str(
        spent(shared, "s1", Budget(resources=one_l4, max_cost=0.01))
    )
    assert "GPU budget is spent: 1.00 GPU-hours" in str(
        spent(shared, "s1", Budget(resources=one_l4, max_gpu_hours=0.5))
    )


def supervise(tmp_path: Path, params: dict[str, Any], budget: dict[str, Any]) -> int:
    program = tmp_path / "prog.py"
    program.write_text("import sys; print('val_loss=' + sys.argv[1])\n")
    cmd = [
        sys.executable, "-m", "components.train",
        "--trainer-command", json.dumps(["python", str(program), "{loss}"]),
        "--collect", json.dumps({"stdout": "name=value"}),
        "--sweep-id", "s1", "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--objective", "val_loss", "--budget", json.dumps(budget),
    ]  # fmt: skip
    env = train_env(tmp_path / "shared", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=120).returncode


def test_a_trial_does_not_start_past_the_budget_but_a_started_one_finishes(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    result(shared, {"lr": 4}, "failed", error="RuntimeError: boom")
    fresh = {"loss": "0.25"}
    assert supervise(tmp_path, fresh, {"max_failed_trials": 0}) == 0
    doc = json.loads((trial_dir(shared, "s1", trial_id(fresh)) / "result.json").read_text())
    assert doc["status"] == "skipped" and "failure budget is spent" in doc["error"]
    assert not (trial_dir(shared, "s1", trial_id(fresh)) / "attempts.jsonl").exists()
    started = {"loss": "0.5"}
    folder = trial_dir(shared, "s1", trial_id(started))
    folder.mkdir(parents=True)
    (folder / "attempts.jsonl").write_text(
        json.dumps({"event": "start", "id": "p", "time": 1.0, "lost": 0}) + "\n"
    )  # an attempt was preempted before the budget was spent: the retry finishes the trial
    assert supervise(tmp_path, started, {"max_failed_trials": 0}) == 0
    assert json.loads((folder / "result.json").read_text())["status"] == "done"
    rows = rank(load_trials(shared, "s1", "val_loss"), "minimize")
    assert [r.status for r in rows] == ["done", "failed", "skipped"]
    assert rows[2].rank is None and rows[2].state.startswith("not started: the sweep's failure")
    assert outcomes(rows)["trials"] == {
        "total": 3, "done": 1, "pruned": 0, "failed": 1, "skipped": 1
    }  # fmt: skip
    assert "not started" in to_markdown(rows, "val_loss")


def test_a_nan_or_infinite_objective_fails_the_trial_with_that_reason(tmp_path: Path) -> None:
    for value in ("nan", "inf"):
        params = {"loss": value}
        assert supervise(tmp_path, params, {"max_failed_trials": 5}) == 3
        doc = json.loads(
            (trial_dir(tmp_path / "shared", "s1", trial_id(params)) / "result.json").read_text()
        )
        assert doc["status"] == "failed" and f"the objective 'val_loss' is {value}" in doc["error"]

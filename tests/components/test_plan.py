"""The plan step: trial ids from canonical params, duplicates collapsed, bad plans refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.contract import canonical_json, resolve_sweep_id, trial_id
from components.plan import PlanError, make_plan
from components.space import SearchSpace


def test_trial_id_is_the_hash_of_canonical_params_whatever_the_key_order() -> None:
    a = {"lr": 0.1, "hidden": 64, "name": "ü"}
    b = {"name": "ü", "hidden": 64, "lr": 0.1}
    assert canonical_json(a) == canonical_json(b) == '{"hidden":64,"lr":0.1,"name":"ü"}'
    assert trial_id(a) == trial_id(b)
    assert len(trial_id(a)) == 12 and int(trial_id(a), 16) >= 0
    assert trial_id({"lr": 0.1, "hidden": 65, "name": "ü"}) != trial_id(a)


def test_grid_expands_to_the_cartesian_product_with_fixed_params() -> None:
    space = SearchSpace.model_validate(
        {"grid": {"lr": [0.1, 0.01], "h": [8, 16, 32]}, "fixed": {"steps": 5}}
    )
    trials, dups = make_plan(space, max_trials=10)
    assert len(trials) == 6 and dups == {}
    params = [json.loads(t["params"]) for t in trials]
    assert all(p["steps"] == 5 for p in params)
    assert {(p["lr"], p["h"]) for p in params} == {
        (lr, h) for lr in (0.1, 0.01) for h in (8, 16, 32)
    }
    assert all(t["id"] == trial_id(json.loads(t["params"])) for t in trials)


def test_random_search_is_reproducible_from_its_seed_and_within_bounds() -> None:
    spec = {
        "random": {
            "n_trials": 20,
            "seed": 7,
            "params": {
                "lr": {"loguniform": [1e-4, 1e-1]},
                "d": {"uniform": [0.0, 0.5]},
                "act": {"choice": ["relu", "gelu"]},
            },
        }
    }
    first, _ = make_plan(SearchSpace.model_validate(spec), max_trials=100)
    again, _ = make_plan(SearchSpace.model_validate(spec), max_trials=100)
    assert first == again
    other_seed = {"random": {**spec["random"], "seed": 8}}
    assert make_plan(SearchSpace.model_validate(other_seed), max_trials=100)[0] != first
    for t in first:
        p = json.loads(t["params"])
        assert 1e-4 <= p["lr"] <= 1e-1 and 0.0 <= p["d"] <= 0.5 and p["act"] in {"relu", "gelu"}


def test_duplicates_are_collapsed_and_reported() -> None:
    space = SearchSpace.model_validate({"grid": {"lr": [0.1, 0.1, 0.2]}})
    trials, dups = make_plan(space, max_trials=10)
    assert [json.loads(t["params"])["lr"] for t in trials] == [0.1, 0.2]
    assert dups == {trial_id({"lr": 0.1}): 2}


def test_oversized_plan_is_an_error() -> None:
    space = SearchSpace.model_validate({"grid": {"a": list(range(5)), "b": list(range(5))}})
    with pytest.raises(PlanError, match="25 trials, more than max_trials=10"):
        make_plan(space, max_trials=10)
    with pytest.raises(PlanError, match="far above max_trials"):
        make_plan(
            SearchSpace.model_validate({"grid": {"a": list(range(1000)), "b": list(range(1000))}}),
            max_trials=10,
        )


def test_sweep_id_falls_back_to_the_workflow_name_and_is_checked() -> None:
    assert resolve_sweep_id("", {"SWEEPYARD_WORKFLOW_NAME": "sweep-abc12"}) == "sweep-abc12"
    assert resolve_sweep_id("mine", {"SWEEPYARD_WORKFLOW_NAME": "sweep-abc12"}) == "mine"
    with pytest.raises(ValueError, match="no sweep id"):
        resolve_sweep_id("", {})
    with pytest.raises(ValueError, match="invalid sweep id '../etc'"):
        resolve_sweep_id("../etc", {})


def _run_plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SWEEPYARD_SHARED": str(tmp_path / "shared"),
        "SWEEPYARD_OUTPUTS": str(tmp_path / "out"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SENTRY_DSN", None)
    return subprocess.run(
        [sys.executable, "-m", "components.plan", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_plan_output_parameter_and_stdout(tmp_path: Path) -> None:
    space = json.dumps({"grid": {"lr": [0.1, 0.1, 0.2]}, "fixed": {"steps": 3}})
    proc = _run_plan(tmp_path, "--sweep-id", "s1", "--space", space, "--max-trials", "8")
    assert proc.returncode == 0, proc.stderr
    trials = json.loads(proc.stdout)
    assert len(trials) == 2
    assert json.loads((tmp_path / "out" / "trials").read_text()) == trials
    assert json.loads((tmp_path / "shared" / "sweeps" / "s1" / "plan.json").read_text()) == trials
    assert "appears 2 times" in proc.stderr


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ('{"grid": {"lr": []}}', "grid.lr"),
        ('{"grid": {"a": [1,2,3]}}', "more than max_trials=2"),
        ("not json", "invalid --space"),
        ('{"random": {"n_trials": 2, "params": {"x": {"gauss": 1}}}}', "random.params.x"),
    ],
)
def test_cli_gives_up_with_exit_3_on_a_bad_space(tmp_path: Path, space: str, message: str) -> None:
    proc = _run_plan(tmp_path, "--sweep-id", "s1", "--space", space, "--max-trials", "2")
    assert proc.returncode == 3
    assert message in proc.stderr
    assert not (tmp_path / "shared" / "sweeps" / "s1" / "plan.json").exists()

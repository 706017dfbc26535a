"""The trial's pruner against a real journal: kills of the supervisor, and eight trials at once.

The supervisor (``python -m components.train``) runs a slow toy trainer with ``--pruner``; the test
SIGKILLs it at a chosen moment and runs it again, as a retried pod would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from components.api import Trial
from components.contract import trial_dir, trial_id
from components.search.rounds import suggest_round
from components.search.study import default_storage, open_study
from components.space import SearchSpace
from tests.conftest import REPO

SPACE = SearchSpace.model_validate(
    {"random": {"params": {"x": {"uniform": [0.0, 1.0]}}}, "fixed": {"steps": 30}}
)
MEDIAN = {"rule": "median", "metric": "loss", "direction": "minimize"}


def slow_train(trial: Trial, *, x: float, steps: int) -> None:
    """loss = 1 + x at every step; a step marker file per executed step; slow step boundaries."""
    ran = Path(os.environ["TOY_STEPS_FILE"])
    for step in range(trial.start_step + 1, steps + 1):
        with ran.open("a") as f:
            f.write(f"{step}\n")
        trial.log(step, {"loss": 1.0 + x})
        time.sleep(float(os.environ.get("TOY_SLEEP", "0.1")))
        trial.checkpoint(step, lambda: {"x": x})


def study(sweep: str = "s1", pruner: dict[str, Any] | None = None) -> Any:
    return open_study(
        default_storage(sweep), study_name=sweep, algorithm="tpe", direction="minimize", seed=0,
        early_stopping=pruner or MEDIAN,
    )  # fmt: skip


def supervisor(shared: Path, params: dict[str, Any], **env: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "components.train",
        "--trainer-function", "tests.components.test_search_pruning:slow_train",
        "--sweep-id", "s1", "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--data", str(shared), "--data-hash", "h", "--objective", "loss",
        "--checkpoint-interval", "3600", "--max-app-errors", "2", "--pruner", json.dumps(MEDIAN),
    ]  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPYARD_"))}
    full.update(PYTHONPATH=str(REPO), SWEEPYARD_SHARED=str(shared), **env)
    return subprocess.Popen(argv, cwd=REPO, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def wait_for(check: Any, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def journal_reports(shared: Path) -> Counter[tuple[int, int]]:
    """(Optuna trial id, step) → how many times it was written to the journal."""
    from optuna.storages.journal._storage import JournalOperation

    ops = (
        json.loads(line) for line in (shared / "sweeps/s1/study.journal").read_text().splitlines()
    )
    return Counter(
        (op["trial_id"], op["step"])
        for op in ops
        if op["op_code"] == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE
    )


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path))
    return tmp_path


def test_a_trial_killed_after_reporting_resumes_without_duplicate_reports(shared: Path) -> None:
    (params,) = suggest_round(study(), SPACE, batch=1, max_trials=1, sweep_id="s1")
    steps_file = shared / "ran.txt"
    proc = supervisor(shared, params, TOY_STEPS_FILE=str(steps_file))
    wait_for(
        lambda: (
            len(journal_reports(shared)) >= 6
            if (shared / "sweeps/s1/study.journal").exists()
            else False
        )
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reported_before = len(journal_reports(shared))
    assert 6 <= reported_before < 30
    # The retry starts over from step 1 (no checkpoint yet) and reports every step again.
    out, _ = supervisor(shared, params, TOY_STEPS_FILE=str(steps_file), TOY_SLEEP="0").communicate(
        timeout=180
    )
    ran = [int(s) for s in steps_file.read_text().split()]
    assert ran.count(1) == 2, out  # steps 1.. were really run twice
    reports = journal_reports(shared)
    assert sorted(step for _, step in reports) == list(range(1, 31))
    assert set(reports.values()) == {1}  # each step once in the study, across both attempts
    result = json.loads((trial_dir(shared, "s1", trial_id(params)) / "result.json").read_text())
    assert result["status"] == "done" and result["steps_run"] == 30


def test_a_pruned_decision_sticks_across_a_kill(shared: Path) -> None:
    from components.search.study import TrialIds, storage_of

    s = study()
    done = suggest_round(s, SPACE, batch=5, max_trials=6, sweep_id="s1")
    ids = TrialIds(storage_of(s), s.study_name)
    for t in s.get_trials():  # five finished trials, all far better than the next one at every step
        for step in range(1, 31):
            ids.storage.set_trial_intermediate_value(ids(t.number), step, 0.1)
    for p in done:
        tdir = trial_dir(shared, "s1", trial_id(p))
        tdir.mkdir(parents=True)
        (tdir / "result.json").write_text(
            json.dumps({"status": "done", "objective": {"value": 0.1}})
        )
    (params,) = suggest_round(s, SPACE, batch=1, max_trials=6, sweep_id="s1")
    steps_file = shared / "ran.txt"
    tdir = trial_dir(shared, "s1", trial_id(params))
    proc = supervisor(shared, params, TOY_STEPS_FILE=str(steps_file), TOY_SLEEP="5")
    wait_for(lambda: (tdir / "pruned.json").exists())
    proc.send_signal(signal.SIGKILL)  # decided, still sleeping before its step boundary
    proc.wait(30)
    assert not (tdir / "result.json").exists()
    decided = json.loads((tdir / "pruned.json").read_text())
    assert decided["step"] == 1 and decided["metric"] == "loss"
    out, _ = supervisor(shared, params, TOY_STEPS_FILE=str(steps_file), TOY_SLEEP="0").communicate(
        timeout=180
    )
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "pruned" and result["pruned_at_step"] == 1, out
    assert result["steps_run"] == 1
    assert steps_file.read_text().split() == ["1"]  # the retry ran no step
    assert suggest_round(study(), SPACE, batch=1, max_trials=6, sweep_id="s1") == []
    assert [t.state.name for t in study().get_trials()][-1] == "PRUNED"


REPORTER = """
import sys, time
from pathlib import Path
from components.runtime.pruning import from_spec
tid, start = sys.argv[1], Path(sys.argv[2])
pruner = from_spec({"rule": "median", "metric": "loss"}, trial_id=tid, sweep_id="s1")
while not start.exists():
    time.sleep(0.005)
for step in range(1, 41):
    pruner.report(step, 1.0)
"""


def test_eight_trials_reporting_to_one_journal_at_once_lose_no_report(shared: Path) -> None:
    round_ = suggest_round(study(), SPACE, batch=8, max_trials=8, sweep_id="s1")
    start = shared / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWEEPYARD_SHARED": str(shared)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPORTER, trial_id(p), str(start)], cwd=REPO, env=env
        )
        for p in round_
    ]
    time.sleep(3)  # all imported and waiting
    start.touch()
    assert [p.wait(180) for p in procs] == [0] * 8
    trials = study().get_trials()
    assert len(trials) == 8
    assert all(sorted(t.intermediate_values) == list(range(1, 41)) for t in trials)
    assert set(journal_reports(shared).values()) == {1} and len(journal_reports(shared)) == 320


def test_a_trial_that_reaches_its_budget_is_never_pruned_there(tmp_path: Path) -> None:
    """A rung on the last step (e.g. steps=270, min_step 30, factor 3) must not cut a whole trial."""
    import optuna

    from components.runtime.pruning import StudyPruner
    from components.search.rounds import TRIAL_ATTR

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    outcomes = {}
    for name, step in (("midway", 5), ("last", 10), ("past", 11)):
        t = study.ask()
        t.set_user_attr(TRIAL_ATTR, name)
        pruner = StudyPruner(
            study,
            metric="loss",
            trial_id=name,
            decision=tmp_path / f"{name}.json",
            final_step=10,
            storage=storage,
        )
        outcomes[name] = (pruner.report(step, 1.0), pruner.pruned_at())
    assert outcomes == {"midway": (True, 5), "last": (False, None), "past": (False, None)}

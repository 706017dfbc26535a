"""Rounds of an adaptive search against a real Optuna journal on a temporary shared disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components import suggest
from components.contract import trial_id
from components.search.rounds import TRIAL_ATTR, suggest_round
from components.search.spec import SearchSpec, distributions
from components.search.study import default_storage, open_study
from tests.conftest import REPO
from tests.support.search import SPACE


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path))
    return tmp_path


def study(sweep: str = "s1", direction: str = "minimize") -> Any:
    return open_study(
        default_storage(sweep), study_name=sweep, algorithm="tpe", direction=direction, seed=0,
        early_stopping={"rule": "asha", "min_step": 1},
    )  # fmt: skip


def finish(shared: Path, params: dict[str, Any], status: str, value: float | None) -> None:
    tdir = shared / "sweeps" / "s1" / "trials" / trial_id(params)
    tdir.mkdir(parents=True, exist_ok=True)
    doc = {"status": status, "objective": {"metric": "val_loss", "value": value}}
    (tdir / "result.json").write_text(json.dumps(doc))


def states(s: Any) -> list[str]:
    return [t.state.name for t in s.get_trials()]


def test_rounds_tell_each_outcome_once_and_stop_at_max_trials(shared: Path) -> None:
    s = study()
    first = suggest_round(s, SPACE, batch=3, max_trials=5, sweep_id="s1")
    assert len(first) == 3 and all(p["steps"] == 30 and p["depth"] in (1, 2) for p in first)
    assert len({trial_id(p) for p in first}) == 3
    assert (shared / "sweeps" / "s1" / "study.journal").is_file()
    finish(shared, first[0], "done", 0.5)
    finish(shared, first[1], "pruned", None)
    finish(shared, first[2], "failed", None)
    second = suggest_round(s, SPACE, batch=3, max_trials=5, sweep_id="s1")
    assert len(second) == 2  # max_trials counts every trial handed out, failed ones too
    assert states(s)[:3] == ["COMPLETE", "PRUNED", "FAIL"] and s.trials[0].value == 0.5
    for p in second:
        finish(shared, p, "done", 0.25)
    assert suggest_round(s, SPACE, batch=3, max_trials=5, sweep_id="s1") == []
    assert suggest_round(s, SPACE, batch=3, max_trials=5, sweep_id="s1") == []  # told once
    assert states(s) == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE", "COMPLETE"]
    assert {t.user_attrs[TRIAL_ATTR] for t in s.get_trials()} == {
        trial_id(p) for p in first + second
    }
    assert all(set(t.params) == {"lr", "hidden", "depth"} for t in s.get_trials())  # the user's


def test_a_round_asked_again_before_its_trials_end_hands_out_the_same_trials(shared: Path) -> None:
    first = suggest_round(study(), SPACE, batch=4, max_trials=20, sweep_id="s1")
    again = suggest_round(study(), SPACE, batch=4, max_trials=20, sweep_id="s1")  # a new process
    assert again == first and len(study().get_trials()) == 4


def test_a_resubmitted_sweep_continues_its_study_and_repeats_no_finished_trial(
    shared: Path,
) -> None:
    seen: list[dict[str, Any]] = []
    for _ in range(3):  # three submissions of the same sweep id, one round each
        s = study()
        round_ = suggest_round(s, SPACE, batch=2, max_trials=6, sweep_id="s1")
        for i, p in enumerate(round_):
            finish(shared, p, "done", 1.0 / (len(seen) + i + 1))
        seen += round_
    assert len(seen) == 6 and len({trial_id(p) for p in seen}) == 6
    assert suggest_round(study(), SPACE, batch=2, max_trials=6, sweep_id="s1") == []
    assert states(study()) == ["COMPLETE"] * 6


def test_a_trial_asked_but_never_named_is_handed_out_by_the_next_round(shared: Path) -> None:
    s = study()
    orphan = s.ask(distributions(SPACE))  # a suggest killed between asking and naming
    round_ = suggest_round(s, SPACE, batch=2, max_trials=10, sweep_id="s1")
    assert round_[0] == {
        "steps": 30,
        **{k: pytest.approx(v, rel=1e-5) for k, v in orphan.params.items()},
    }
    assert len(round_) == 2 and len(s.get_trials()) == 2
    assert s.get_trials()[0].user_attrs[TRIAL_ATTR] == trial_id(round_[0])


def test_a_maximised_objective_is_told_as_is(shared: Path) -> None:
    s = study("s1", "maximize")
    (p,) = suggest_round(s, SPACE, batch=1, max_trials=3, sweep_id="s1")
    finish(shared, p, "done", 0.9)
    suggest_round(s, SPACE, batch=1, max_trials=3, sweep_id="s1")
    assert s.best_value == 0.9


KILLED_SUGGEST = """
import os, signal, sys
import optuna
from components.search import rounds
from components.search.study import default_storage, open_study
from tests.support.search import SPACE
real_ask = optuna.Study.ask
calls = []
def ask(self, *a, **kw):
    trial = real_ask(self, *a, **kw)
    calls.append(trial)
    if len(calls) == 3:  # killed right after the third ask, before it is named
        os.kill(os.getpid(), signal.SIGKILL)
    return trial
optuna.Study.ask = ask
s = open_study(default_storage("s1"), study_name="s1", algorithm="tpe", direction="minimize",
               seed=0, early_stopping=None)
rounds.suggest_round(s, SPACE, batch=4, max_trials=8, sweep_id="s1")
"""


def test_the_suggest_step_killed_mid_round_leaves_a_study_its_retry_completes(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SUGGEST], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    asked = study().get_trials()
    assert len(asked) == 3 and TRIAL_ATTR not in asked[2].user_attrs  # the kill hit mid-round
    named = [t.user_attrs[TRIAL_ATTR] for t in asked[:2]]
    # The retry: the CLI the Argo step runs, exactly as a retried pod would.
    outputs = shared / "outputs"
    monkeypatch.setenv("SWEEPYARD_OUTPUTS", str(outputs))
    spec = SearchSpec(algorithm="tpe", space=SPACE, max_trials=8, batch=4)
    assert suggest.main(["--sweep-id", "s1", "--search", spec.model_dump_json()]) == 0
    trials = json.loads((outputs / "trials").read_text())
    ids = [t["id"] for t in trials]
    assert len(ids) == 4 and len(set(ids)) == 4 and ids[:2] == named
    assert (outputs / "more").read_text() == "true"
    after = study().get_trials()
    assert len(after) == 4 and all(TRIAL_ATTR in t.user_attrs for t in after)  # no orphan left
    assert [
        t["id"] for t in json.loads((shared / "sweeps" / "s1" / "plan.json").read_text())
    ] == ids
    assert all(json.loads(t["params"])["steps"] == 30 for t in trials)


def test_unreachable_storage_exits_3_naming_search_storage(
    shared: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWEEPYARD_OUTPUTS", str(shared / "outputs"))
    monkeypatch.setenv("SWEEPYARD_STUDY_STORAGE", "postgresql://sweep:hunter2@127.0.0.1:9/optuna")
    spec = SearchSpec(algorithm="tpe", space=SPACE, max_trials=8, batch=4, storage="secret")
    assert suggest.main(["--sweep-id", "s1", "--search", spec.model_dump_json()]) == 3
    err = capsys.readouterr().err
    assert "search.storage" in err and "hunter2" not in err
    assert not (shared / "outputs" / "trials").exists()
    monkeypatch.delenv("SWEEPYARD_STUDY_STORAGE")
    assert suggest.main(["--sweep-id", "s1", "--search", spec.model_dump_json()]) == 3
    assert "SWEEPYARD_STUDY_STORAGE is empty" in capsys.readouterr().err


def test_a_spent_time_budget_starts_no_new_round_but_tells_the_last(shared: Path) -> None:
    from components.search.study import STARTED_ATTR

    spec = SearchSpec(algorithm="tpe", space=SPACE, max_trials=8, batch=2, time_budget="1h")
    first, named = suggest.run_round(spec, "s1")
    assert len(first) == 2 and named == 2
    for t in first:
        finish(shared, json.loads(t["params"]), "done", 0.3)
    study().set_user_attr(STARTED_ATTR, time.time() - 3601)  # the study began over an hour ago
    assert suggest.run_round(spec, "s1") == ([], 2)
    assert states(study()) == ["COMPLETE", "COMPLETE"]


def test_a_database_from_the_secret_holds_the_study_for_suggest_and_pruner(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.runtime.pruning import from_spec

    url = f"sqlite:///{shared / 'optuna.db'}"
    monkeypatch.setenv("SWEEPYARD_STUDY_STORAGE", url)
    spec = SearchSpec(algorithm="tpe", space=SPACE, max_trials=4, batch=2, storage="secret")
    trials, _ = suggest.run_round(spec, "s1")
    pruner = from_spec(
        {"rule": "median", "metric": "val_loss", "storage": "secret"},
        trial_id=trials[0]["id"],
        sweep_id="s1",
    )
    assert pruner is not None and pruner.report(1, 0.5) is False and pruner.report(1, 0.9) is False
    import optuna

    (first, _) = optuna.load_study(study_name="s1", storage=url).get_trials()
    assert first.intermediate_values == {1: 0.5}  # the step reported once, the first value kept
    assert not (shared / "sweeps" / "s1" / "study.journal").exists()

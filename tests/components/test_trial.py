"""Trial bookkeeping: attempts.jsonl accounting, the SIGTERM flag, params validation."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from components.runtime.params import bind_params, signature
from components.runtime.trial import AttemptLog, GiveUp, StopSignal, read_attempts
from components.trainers import digits

DIGITS = signature(digits.train)


def test_a_start_without_an_end_counts_as_a_preemption(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    first = AttemptLog(path, env={"SWEEPYARD_ATTEMPT": "0"})
    first.start()  # then SIGKILLed: no end record
    second = AttemptLog(path, env={"SWEEPYARD_ATTEMPT": "1"})
    assert second.number == 2 and second.history.preemptions == 1
    second.start()
    second.end("preempted", 143)
    third = AttemptLog(path, env={})
    third.start()
    third.end("app_error", 1, "boom")
    with open(path, "a") as f:
        f.write('{"event": "sta')  # a torn line from a kill mid-append
    history = read_attempts(path)
    assert (history.attempts, history.preemptions, history.app_errors) == (3, 2, 1)
    records = [json.loads(line) for line in path.read_text().splitlines()[:-1]]
    assert [r["event"] for r in records] == ["start", "start", "end", "start", "end"]
    assert records[0]["retry"] == "0" and records[1]["previous_preemptions"] == 1


def test_sigterm_sets_the_flag_and_the_grace_period_counts_down() -> None:
    stop = StopSignal(env={"SWEEPYARD_GRACE_SECONDS": "7"}).install()
    try:
        assert stop.grace == 7.0 and not stop.requested and stop.remaining() == 7.0
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and stop.signum == signal.SIGTERM
        assert 0 < stop.remaining() <= 7.0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(GiveUp, match="SWEEPYARD_GRACE_SECONDS"):
        StopSignal(env={"SWEEPYARD_GRACE_SECONDS": "soon"})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": 0.1, "hidden": 8, "batch_size": 4, "steps": 3}, "'seed' is missing"),
        (
            {"lr": 0.1, "hidden": 8.5, "batch_size": 4, "steps": 3, "seed": 0},
            "'hidden' must be an integer",
        ),
        (
            {"lr": "fast", "hidden": 8, "batch_size": 4, "steps": 3, "seed": 0},
            "'lr' must be a number",
        ),
        (
            {"lr": 0.1, "hidden": 8, "batch_size": 0, "steps": 3, "seed": 0},
            "'batch_size' must be at least 1",
        ),
        (
            {"lr": 0.1, "hidden": 8, "batch_size": 4, "steps": 3, "seed": 0, "dropout": 0.1},
            "unknown trial param 'dropout'",
        ),
    ],
)
def test_bad_params_are_named(params: dict, message: str) -> None:
    with pytest.raises(GiveUp, match=message):
        bind_params(DIGITS, params)


def test_valid_params_with_optional_ones() -> None:
    p = bind_params(
        DIGITS, {"lr": 0.1, "hidden": 8, "batch_size": 4, "steps": 3.0, "seed": 0, "depth": 2}
    )["params"]
    assert isinstance(p, digits.DigitsParams)
    assert (p.steps, p.depth, p.eval_every, p.weight_decay) == (3, 2, 50, 0.0)


def test_an_attempt_killed_before_its_start_record_still_counts_as_a_preemption(
    tmp_path: Path,
) -> None:
    """Argo's retry number says how many attempts ran: one killed while importing left no record."""
    path = tmp_path / "attempts.jsonl"
    env = {"SWEEPYARD_WORKFLOW_NAME": "sweep-abcde"}
    first = AttemptLog(path, env={**env, "SWEEPYARD_ATTEMPT": "0"})
    first.start()
    first.end("preempted", 143)
    # retry 1 was SIGKILLed before it wrote anything; retry 2 starts
    third = AttemptLog(path, env={**env, "SWEEPYARD_ATTEMPT": "2"})
    assert (third.number, third.history.preemptions) == (3, 2)
    third.start()
    third.end("done", 0)
    assert (read_attempts(path).attempts, read_attempts(path).preemptions) == (3, 2)
    # a resubmitted sweep (another workflow) starts again at retry 0: nothing lost
    resumed = AttemptLog(
        path, env={"SWEEPYARD_WORKFLOW_NAME": "sweep-fghij", "SWEEPYARD_ATTEMPT": "0"}
    )
    assert (resumed.number, resumed.history.preemptions) == (4, 2)


def test_tensorboard_runs_are_named_by_trial_and_varying_params(tmp_path: Path) -> None:
    from components.runtime.trial import tensorboard_dir

    plan = [
        {"id": "aaa", "params": json.dumps({"lr": 0.1, "hidden": 8, "seed": 0})},
        {"id": "bbb", "params": {"lr": 0.01, "hidden": 8, "seed": 0}},
    ]
    (tmp_path / "sweeps" / "s1").mkdir(parents=True)
    (tmp_path / "sweeps" / "s1" / "plan.json").write_text(json.dumps(plan))
    env = {"SWEEPYARD_TENSORBOARD_ROOT": "tb"}
    assert tensorboard_dir(tmp_path, "s1", "bbb", env) == tmp_path / "tb" / "s1" / "bbb lr=0.01"
    assert tensorboard_dir(tmp_path, "s2", "ccc", {}) == tmp_path / "tensorboard" / "s2" / "ccc"

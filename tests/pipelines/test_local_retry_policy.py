"""The local runner's retry decision, as a user of Argo's ``retryStrategy`` expects it.

Pure functions of :mod:`pipelines.backends.local.retry_policy`: no process runs here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.argo.vocab import DEFAULT_RETRY_POLICY, NodePhase, RetryPolicy
from pipelines.backends.local.pod import Attempt
from pipelines.backends.local.retry import attempt_outcome
from pipelines.backends.local.retry_policy import (
    Backoff,
    Outcome,
    RetryStrategy,
    Verdict,
    decide_retry,
)

ALWAYS, ON_FAILURE, ON_ERROR, ON_TRANSIENT = (
    RetryPolicy.ALWAYS,
    RetryPolicy.ON_FAILURE,
    RetryPolicy.ON_ERROR,
    RetryPolicy.ON_TRANSIENT_ERROR,
)
FAILED, ERROR, TRANSIENT = Outcome.FAILED, Outcome.ERROR, Outcome.TRANSIENT_ERROR
LOG = Path("attempt.log")  # never opened


@pytest.mark.parametrize(
    ("policy", "outcome", "verdict"),
    [
        # OnFailure (Argo's default): a step that failed, not a pod that errored
        (ON_FAILURE, FAILED, Verdict.RETRY),
        (ON_FAILURE, ERROR, Verdict.POLICY),
        (ON_FAILURE, TRANSIENT, Verdict.POLICY),
        # OnError: the reverse
        (ON_ERROR, FAILED, Verdict.POLICY),
        (ON_ERROR, ERROR, Verdict.RETRY),
        (ON_ERROR, TRANSIENT, Verdict.RETRY),
        # OnTransientError: only an error that is expected to go away
        (ON_TRANSIENT, FAILED, Verdict.POLICY),
        (ON_TRANSIENT, ERROR, Verdict.POLICY),
        (ON_TRANSIENT, TRANSIENT, Verdict.RETRY),
        # Always: failures and errors
        (ALWAYS, FAILED, Verdict.RETRY),
        (ALWAYS, ERROR, Verdict.RETRY),
        (ALWAYS, TRANSIENT, Verdict.RETRY),
    ],
)
def test_policy_picks_the_outcomes_it_retries(
    policy: RetryPolicy, outcome: Outcome, verdict: Verdict
) -> None:
    assert decide_retry(policy, outcome, retries=0, limit=3) is verdict


@pytest.mark.parametrize("policy", list(RetryPolicy))
def test_a_succeeded_attempt_is_never_retried(policy: RetryPolicy) -> None:
    assert decide_retry(policy, Outcome.SUCCEEDED, retries=0, limit=3) is Verdict.SUCCEEDED


@pytest.mark.parametrize(
    ("limit", "retries", "verdict"),
    [
        (0, 0, Verdict.LIMIT),  # limit 0: the first attempt is the only one
        (1, 0, Verdict.RETRY),  # limit 1: one retry, two attempts in all
        (1, 1, Verdict.LIMIT),
        (2, 0, Verdict.RETRY),
        (2, 1, Verdict.RETRY),  # limit counts retries, not attempts: a third attempt runs
        (2, 2, Verdict.LIMIT),
        (None, 1000, Verdict.RETRY),  # no limit
    ],
)
def test_limit_counts_retries_not_attempts(
    limit: int | None, retries: int, verdict: Verdict
) -> None:
    assert decide_retry(ON_FAILURE, FAILED, retries=retries, limit=limit) is verdict


@pytest.mark.parametrize(
    ("expression", "verdict"),
    [(None, Verdict.RETRY), (True, Verdict.RETRY), (False, Verdict.EXPRESSION)],
)
def test_an_expression_that_is_false_stops_retrying(
    expression: bool | None, verdict: Verdict
) -> None:
    assert decide_retry(ALWAYS, FAILED, retries=0, limit=5, expression=expression) is verdict


def test_policy_is_read_before_the_expression_and_the_expression_before_the_limit() -> None:
    # the policy says no: an expression that says yes does not override it
    assert decide_retry(ON_ERROR, FAILED, retries=0, limit=5, expression=True) is Verdict.POLICY
    # out of retries and a false expression: Argo reports the expression
    assert (
        decide_retry(ON_FAILURE, FAILED, retries=5, limit=5, expression=False) is Verdict.EXPRESSION
    )


@pytest.mark.parametrize(
    ("phase", "preempted", "outcome"),
    [
        (NodePhase.SUCCEEDED, False, Outcome.SUCCEEDED),
        (NodePhase.FAILED, False, Outcome.FAILED),  # non-zero exit, deadline
        (NodePhase.ERROR, True, Outcome.TRANSIENT_ERROR),  # a lost (preempted) pod
        # an Error after the step ran (an output it did not write) has always counted as
        # transient locally
        (NodePhase.ERROR, False, Outcome.TRANSIENT_ERROR),
    ],
)
def test_local_attempts_map_to_outcomes(
    phase: NodePhase, preempted: bool, outcome: Outcome
) -> None:
    attempt = Attempt(index=0, log=LOG, phase=phase, preempted=preempted)
    assert attempt_outcome(attempt) is outcome
    assert outcome.phase == phase


def test_a_preempted_trial_is_retried_by_the_policies_sweeps_use() -> None:
    lost = attempt_outcome(Attempt(index=0, log=LOG, phase=NodePhase.ERROR, preempted=True))
    assert decide_retry(ALWAYS, lost, retries=0, limit=3) is Verdict.RETRY
    assert decide_retry(ON_ERROR, lost, retries=0, limit=3) is Verdict.RETRY
    assert decide_retry(ON_FAILURE, lost, retries=0, limit=3) is Verdict.POLICY


def test_strategy_defaults() -> None:
    none = RetryStrategy.of({"name": "t"})
    assert (none.present, none.policy, none.limit) == (False, DEFAULT_RETRY_POLICY, 0)
    assert none.policy is RetryPolicy.ON_FAILURE
    unlimited = RetryStrategy.of({"name": "t", "retryStrategy": {"retryPolicy": "Always"}})
    assert (unlimited.present, unlimited.policy, unlimited.limit) == (True, ALWAYS, None)
    given = RetryStrategy.of(
        {"name": "t", "retryStrategy": {"limit": "2", "expression": "lastRetry.exitCode != 3"}}
    )
    assert (given.limit, given.policy, given.expression) == (
        2,
        ON_FAILURE,
        "lastRetry.exitCode != 3",
    )


def test_backoff_waits_grow_by_the_factor_up_to_the_cap_then_scale() -> None:
    backoff = Backoff.of({"duration": "10", "factor": 2, "cap": "35s"}, "template t")
    assert [backoff.wait(n, 1.0) for n in range(4)] == [10.0, 20.0, 35.0, 35.0]
    assert backoff.wait(1, 0.01) == pytest.approx(0.2)
    assert not Backoff.of({}, "template t").exceeded(1e9)  # no maxDuration: never exceeded
    limited = Backoff.of({"maxDuration": "1m"}, "template t")
    assert not limited.exceeded(60.0)
    assert limited.exceeded(60.5)

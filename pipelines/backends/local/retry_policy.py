"""Argo's ``retryStrategy`` as pure functions: whether a finished attempt is retried, and why not.

Mirrors the controller's order: the policy reads the attempt's outcome, then the expression
(evaluated only when the policy would retry), then the limit, which counts retries (``limit: 2``
is three attempts); the backoff wait and ``maxDuration`` come last (:class:`Backoff`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from components.durations import parse_seconds_or_duration
from pipelines.argo.expr import ExprError
from pipelines.argo.vocab import DEFAULT_RETRY_POLICY, NodePhase, RetryPolicy


class Outcome(StrEnum):
    """How an attempt ended, as a retry policy reads it."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # the step's own failure (non-zero exit, its deadline)
    ERROR = "Error"  # the pod's, not the step's (Argo: a node in phase Error)
    TRANSIENT_ERROR = "TransientError"  # an Error that is expected to go away (a lost node)

    @property
    def phase(self) -> NodePhase:
        """The node phase of an attempt that ended so."""
        if self is Outcome.SUCCEEDED:
            return NodePhase.SUCCEEDED
        return NodePhase.FAILED if self is Outcome.FAILED else NodePhase.ERROR


class Verdict(StrEnum):
    """What a retry decision says: retry, or the reason it stops."""

    RETRY = "retry"
    SUCCEEDED = "succeeded"  # nothing to retry
    POLICY = "policy"  # the retry policy does not retry this outcome
    EXPRESSION = "expression"  # retryStrategy.expression evaluated to false
    LIMIT = "limit"  # no retries left
    MAX_DURATION = "max-duration"  # the backoff wait would end past backoff.maxDuration


# Which outcomes each policy retries (Argo's RetryPolicy).
RETRIED: Mapping[RetryPolicy, frozenset[Outcome]] = {
    RetryPolicy.ALWAYS: frozenset({Outcome.FAILED, Outcome.ERROR, Outcome.TRANSIENT_ERROR}),
    RetryPolicy.ON_FAILURE: frozenset({Outcome.FAILED}),
    RetryPolicy.ON_ERROR: frozenset({Outcome.ERROR, Outcome.TRANSIENT_ERROR}),
    RetryPolicy.ON_TRANSIENT_ERROR: frozenset({Outcome.TRANSIENT_ERROR}),
}


def policy_retries(policy: RetryPolicy, outcome: Outcome) -> bool:
    """Whether ``policy`` retries an attempt that ended with ``outcome`` (the expression aside)."""
    return outcome in RETRIED[policy]


def decide_retry(
    policy: RetryPolicy,
    outcome: Outcome,
    *,
    retries: int,
    limit: int | None,
    expression: bool | None = None,
) -> Verdict:
    """Whether the attempt that just ended is retried, or why not.

    Args:
        policy: ``retryStrategy.retryPolicy``.
        outcome: how the attempt ended.
        retries: the retries made before this attempt (0 after the first attempt).
        limit: ``retryStrategy.limit``, the most retries (None: no limit).
        expression: the value of ``retryStrategy.expression`` (None: there is none); read only
            when the policy retries the outcome.
    """
    if outcome is Outcome.SUCCEEDED:
        return Verdict.SUCCEEDED
    if not policy_retries(policy, outcome):
        return Verdict.POLICY
    if expression is False:
        return Verdict.EXPRESSION
    if limit is not None and retries >= limit:
        return Verdict.LIMIT
    return Verdict.RETRY


@dataclass(frozen=True)
class RetryStrategy:
    """A template's ``retryStrategy`` as read here (``present``: the template has one)."""

    present: bool
    policy: RetryPolicy
    limit: int | None
    expression: str | None
    backoff: Backoff

    @classmethod
    def of(cls, template: Mapping[str, Any]) -> RetryStrategy:
        """The template's strategy; without one, no retry (limit 0, Argo's default policy)."""
        where = f"template {template['name']}"
        rs = template.get("retryStrategy")
        if not rs:
            return cls(False, DEFAULT_RETRY_POLICY, 0, None, Backoff.of({}, where))
        limit = int(rs["limit"]) if rs.get("limit") is not None else None
        return cls(
            present=True,
            policy=RetryPolicy(rs.get("retryPolicy") or DEFAULT_RETRY_POLICY),
            limit=limit,
            expression=str(rs["expression"]) if rs.get("expression") else None,
            backoff=Backoff.of(rs.get("backoff") or {}, where),
        )


@dataclass(frozen=True)
class Backoff:
    """``retryStrategy.backoff`` in seconds (0: not set)."""

    duration: float
    factor: float
    cap: float
    max_duration: float

    @classmethod
    def of(cls, backoff: Mapping[str, Any], where: str) -> Backoff:
        return cls(
            duration=backoff_seconds(backoff, "duration", where),
            factor=float(backoff.get("factor") or 1),
            cap=backoff_seconds(backoff, "cap", where),
            max_duration=backoff_seconds(backoff, "maxDuration", where),
        )

    def wait(self, retries: int, scale: float) -> float:
        """Seconds before retry number ``retries + 1``: duration x factor^retries, capped, then
        scaled (local runs wait less)."""
        wait = self.duration * self.factor**retries
        wait = min(wait, self.cap) if self.cap else wait
        return wait * scale

    def exceeded(self, elapsed: float) -> bool:
        """Whether ``elapsed`` seconds since the first attempt started are past ``maxDuration``
        (not scaled: a local run keeps it as it is)."""
        return bool(self.max_duration) and elapsed > self.max_duration


def backoff_seconds(backoff: Mapping[str, Any], key: str, where: str) -> float:
    """``retryStrategy.backoff.<key>`` in seconds, read as Argo reads it (whole seconds or a Go
    duration: :func:`components.durations.parse_seconds_or_duration`); 0 when absent."""
    value = backoff.get(key)
    if value is None or value == "":
        return 0.0
    try:
        return parse_seconds_or_duration(str(value))
    except ValueError as e:
        raise ExprError(f"{where}.retryStrategy.backoff.{key}: {e}") from e

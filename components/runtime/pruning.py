"""Early stopping of a trial (the interface of CONTRACT-pruning.md; issue-12 provides the study).

This minimal version defines the names both sides compile against: :class:`Pruned`, the
:class:`Pruner` protocol, and :func:`from_spec`, which builds no pruner until a study backs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Pruned(Exception):
    """Raised at a step boundary when the study decided to stop this trial. ``.step`` is that step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class Pruner(Protocol):
    """Decides, from the objective's intermediate values, whether a trial should stop early."""

    metric: str

    def report(self, step: int, value: float) -> bool:
        """Record the value at ``step`` (idempotent per step); True when the trial should stop now."""
        ...

    def pruned_at(self) -> int | None:
        """The step of an earlier decision to prune this trial (survives preemption)."""
        ...


def from_spec(spec: Mapping[str, Any] | None, *, trial_id: str, sweep_id: str) -> Pruner | None:
    """Build the pruner from the train step's ``--pruner`` JSON (None or {} → no pruning).

    Raises:
        ValueError: a non-empty spec: this build has no study to back a pruner.
    """
    if not spec:
        return None
    raise ValueError(f"--pruner: early stopping is not available in this build (got {dict(spec)})")

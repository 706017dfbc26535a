"""A trial's ``attempts.jsonl`` read back (pure: stdlib only, for ``pipelines/`` too).

The trial harness (:class:`components.runtime.trial.AttemptLog`) writes one ``start`` record when
an attempt begins and one ``end`` record when it ends; these counts are the one record of a trial's
attempts, preemptions and application errors that the summary, leaderboard, MLflow and the Slack
digest all show.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AttemptHistory:
    """What earlier attempts of a trial left in ``attempts.jsonl``."""

    attempts: int = 0
    preemptions: int = 0
    app_errors: int = 0
    first_start: float | None = None
    starts_by_workflow: dict[str, int] = field(default_factory=dict)
    last_outcome_by_workflow: dict[str, str] = field(default_factory=dict)
    last_end: float | None = None
    max_step: int = 0  # the highest step any attempt reached
    lost_steps: int = 0  # steps redone: an attempt restarted below where an earlier one got
    lost_seconds: float = 0.0  # the time those attempts spent getting back there


def read_attempts(path: Path) -> AttemptHistory:
    """Count earlier attempts, preemptions (SIGTERM, or a start without an end) and app errors."""
    history = AttemptHistory()
    redone: dict[str, tuple[int, float]] = {}  # attempt id -> its latest (steps, seconds) redone
    open_starts: set[str] = set()
    workflow_of: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return history
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line from a kill mid-append
        if rec.get("event") == "start":
            lost = int(rec.get("lost") or 0)  # attempts killed before they could write a start
            history.attempts += 1 + lost
            history.preemptions += lost
            workflow = str(rec.get("workflow", ""))
            # the attempts this workflow made: each start, and the lost ones it recorded
            history.starts_by_workflow[workflow] = (
                history.starts_by_workflow.get(workflow, 0) + 1 + lost
            )
            open_starts.add(rec.get("id", ""))
            workflow_of[rec.get("id", "")] = workflow
            history.last_outcome_by_workflow[workflow] = "running"
            if history.first_start is None:
                history.first_start = float(rec.get("time", time.time()))
        if rec.get("event") in ("progress", "end"):
            history.max_step = max(history.max_step, int(rec.get("step") or 0))
            if rec.get("redone_steps") is not None:
                redone[rec.get("id", "")] = (
                    int(rec["redone_steps"]),
                    float(rec.get("redone_seconds") or 0.0),
                )
        if rec.get("event") == "end":
            open_starts.discard(rec.get("id", ""))
            outcome = rec.get("outcome")
            history.last_outcome_by_workflow[workflow_of.get(rec.get("id", ""), "")] = str(outcome)
            history.last_end = float(rec.get("time") or 0) or history.last_end
            if outcome == "preempted":
                history.preemptions += 1
            elif outcome == "app_error":
                history.app_errors += 1
    history.preemptions += len(open_starts)
    history.lost_steps = sum(steps for steps, _ in redone.values())
    history.lost_seconds = round(sum(seconds for _, seconds in redone.values()), 3)
    return history

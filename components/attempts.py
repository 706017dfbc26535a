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


def read_attempts(path: Path) -> AttemptHistory:
    """Count earlier attempts, preemptions (SIGTERM, or a start without an end) and app errors."""
    history = AttemptHistory()
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
            history.starts_by_workflow[workflow] = history.starts_by_workflow.get(workflow, 0) + 1
            open_starts.add(rec.get("id", ""))
            workflow_of[rec.get("id", "")] = workflow
            history.last_outcome_by_workflow[workflow] = "running"
            if history.first_start is None:
                history.first_start = float(rec.get("time", time.time()))
        elif rec.get("event") == "end":
            open_starts.discard(rec.get("id", ""))
            outcome = rec.get("outcome")
            history.last_outcome_by_workflow[workflow_of.get(rec.get("id", ""), "")] = str(outcome)
            history.last_end = float(rec.get("time") or 0) or history.last_end
            if outcome == "preempted":
                history.preemptions += 1
            elif outcome == "app_error":
                history.app_errors += 1
    history.preemptions += len(open_starts)
    return history

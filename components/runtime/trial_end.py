"""How an attempt of a trial ends: the run tagged and given its status, ``result.json`` written,
the attempt's end record (with its spans) appended to ``attempts.jsonl``."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.budget import SKIPPED
from components.contract import EXIT_GIVE_UP, result_file
from components.runtime.harness import Harness
from components.runtime.sender import MetricSender, set_run_status
from components.runtime.spans import SPANS, format_spans
from components.runtime.trial import AttemptLog, now_iso, write_json_atomic
from components.runtime.trial_spec import TrialSpec

log = logging.getLogger("components.train")


@dataclass
class End:
    """How an attempt ended (what ``result.json`` records)."""

    app_errors: int
    step: int = 0
    status: str = "failed"
    error: str | None = None
    code: int = EXIT_GIVE_UP
    pruned_at: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def finish(
    spec: TrialSpec, tdir: Path, attempt: AttemptLog, harness: Harness | None, end: End
) -> int:
    """Flush tracking, end the MLflow run, write ``result.json`` and the attempt's end record."""
    started = time.monotonic()
    left = harness.close(spec.flush_timeout) if harness else 0
    started = SPANS.since("flush", started)
    sender = harness.sender if harness else None
    lost_steps = attempt.history.lost_steps + attempt.redo.steps
    lost_seconds = round(attempt.history.lost_seconds + attempt.redo.seconds(time.time()), 3)
    tags = {"sweepyard.status": "pruned", "sweepyard.pruned_at_step": str(end.step)}
    tags = tags if end.status == "pruned" else {}
    if lost_steps:
        tags.update(
            {"sweepyard.lost_steps": str(lost_steps), "sweepyard.lost_seconds": str(lost_seconds)}
        )
    tag_run(sender, tags)
    status = {"done": "FINISHED", "pruned": "KILLED"}.get(end.status, "FAILED")
    set_run_status(sender, status)
    history = attempt.history
    doc: dict[str, Any] = {
        "sweep_id": spec.sweep_id,
        "trial_id": spec.trial_id,
        "params": spec.params,
        "status": end.status,
        "error": end.error,
        "step": end.step,
        "metrics": dict(sorted(end.metrics.items())),
        "objective": {
            "metric": spec.objective,
            "direction": spec.direction,
            "value": end.metrics.get(spec.objective),
        },
        "run_id": sender.run_id if sender else None,
        "data_hash": spec.data_hash,
        "attempts": attempt.number,
        "preemptions": history.preemptions,
        "app_errors": end.app_errors,
        "lost_steps": lost_steps,
        "lost_seconds": lost_seconds,
        "metric_points_pending": left,
        "wall_seconds": round(time.time() - (history.first_start or attempt.started), 3),
        "image": os.environ.get("SWEEPYARD_IMAGE", ""),
        "finished_at": now_iso(),
    }
    if end.status == "pruned":
        doc["pruned_at_step"] = end.pruned_at
    if end.status in ("done", "pruned"):
        doc["steps_run"] = end.step  # the last step reached (compute saved by pruning)
    write_json_atomic(result_file(tdir), doc)
    outcome = {"done": "done", "pruned": "pruned"}.get(end.status, "gave_up")
    SPANS.since("end", started)
    end_attempt(attempt, outcome, end.code, end.error, step=end.step, harness=harness)
    return end.code


def end_attempt(
    attempt: AttemptLog,
    outcome: str,
    code: int,
    error: str | None,
    step: int | None = None,
    harness: Harness | None = None,
) -> None:
    """The attempt's end record, with its spans (also logged in one line)."""
    last = harness.last_step_at if harness is not None else None
    if last is not None and SPANS.get("exit") is None:
        SPANS.add("exit", time.monotonic() - last)  # the last step until this record
    spans = SPANS.as_dict()
    if spans:
        log.info("spans: %s", format_spans(spans))
    attempt.end(outcome, code, error, step=step, spans=spans)


def skip(spec: TrialSpec, tdir: Path, why: str) -> None:
    """``result.json`` of a trial that never started (status ``skipped``: neither run nor failed)."""
    doc = {
        "sweep_id": spec.sweep_id,
        "trial_id": spec.trial_id,
        "params": spec.params,
        "status": SKIPPED,
        "error": f"not started: {why}",
        "objective": {"metric": spec.objective, "direction": spec.direction, "value": None},
        "attempts": 0,
        "finished_at": now_iso(),
    }
    write_json_atomic(result_file(tdir), doc)


def tag_run(sender: MetricSender | None, tags: dict[str, str]) -> None:
    """Tag the trial's run at its end (pruned at a step, the work it redid)."""
    if not tags or sender is None:
        return
    try:
        sender.log_tags(tags)  # not connected: nothing to tag
    except Exception as exc:  # tracking never fails a trial
        log.warning("could not tag the run: %s", exc)

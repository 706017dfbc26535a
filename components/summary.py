"""What a sweep's summary says in words and counts (pure: file reading only, for ``pipelines/`` too).

:func:`outcomes` gives the trial counts, failures, prunes, compute saved, preemptions and lost work
that ``compare`` puts in ``summary.json`` (and ``notify`` makes when compare did not run);
:func:`final_report` is what ``make submit`` prints at the end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.contract import leaderboard_files, summary_file, sweep_dir
from components.leaderboard import TrialRow, saved


def final_report(shared: Path, sweep_id: str) -> str | None:
    """What ``make submit`` prints at the end: the leaderboard, the plots, the model.

    No MLflow link: a local run's loopback server has stopped by then (``make ui`` serves the runs
    and prints their URL). Pure file reading (for ``pipelines/``); None when compare has not
    summarised the sweep.
    """
    folder = sweep_dir(shared, sweep_id)
    try:
        summary = json.loads(summary_file(folder).read_text(encoding="utf-8"))
        board = leaderboard_files(folder)[0].read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    lines = [f"leaderboard of sweep {sweep_id} ({summary.get('status', '?')}):", board.rstrip("\n")]
    plots = summary.get("plots") or {}
    if plots:
        lines.append("plots: " + "  ".join(str(p) for p in plots.values()))
    model = summary.get("model")
    registration = summary.get("registration") or {}
    if registration.get("message"):  # the line compare printed: registered, or why not
        lines.append(str(registration["message"]))
    elif model:  # a summary from before the champion alias
        lines.append(f"model: {model.get('uri')}")
    elif summary.get("status") == "succeeded" and summary.get("best"):
        lines.append("no model registered: the best trial saved none")
    failed = (summary.get("trials") or {}).get("failed")
    if failed:
        lines.append(f"{failed} failed (budget {summary.get('max_failed_trials', 0)})")
    return "\n".join(lines) + "\n"


def outcomes(rows: Sequence[TrialRow]) -> dict[str, Any]:
    """The trial counts, failures, prunes, compute saved and preemptions of a summary (the one
    compare writes, and the one notify makes when compare did not run)."""
    failed = [r for r in rows if r.failed]
    pruned = [r for r in rows if r.pruned]
    found = saved(rows)
    return {
        "trials": {
            "total": len(rows),
            "done": sum(r.done for r in rows),
            "pruned": len(pruned),
            "failed": len(failed),
            "skipped": sum(r.skipped for r in rows),
        },
        "failed": [{"trial_id": r.trial_id, "error": r.error} for r in failed],
        "pruned": [{"trial_id": r.trial_id, "at_step": r.pruned_at} for r in pruned],
        "compute_saved": found.to_dict() if found is not None and pruned else None,
        "preemptions": sum(r.preemptions for r in rows),
        "preempted_trials": {r.trial_id: r.preemptions for r in rows if r.preemptions},
        "lost_work": {
            "steps": sum(r.lost_steps for r in rows),
            "seconds": round(sum(r.lost_seconds for r in rows), 3),
            "trials": {r.trial_id: r.lost for r in rows if r.lost_steps},
        },
    }

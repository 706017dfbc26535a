"""``make status`` for the local backend: the trial states of a pipeline's last local run.

Reads ``<project>/.sweepyard/runs/<workflow>/run.json`` (kept current by the running backend) and
the trials' ``result.json`` on the local shared disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from pipelines.backends.local.progress import read_json, trial_dir, trial_metric

if TYPE_CHECKING:
    from pipelines.config import SweepConfig


def last_run(project_root: Path, pipeline: str) -> dict[str, Any] | None:
    """``run.json`` of the newest local run of ``pipeline`` (None when there is none)."""
    runs = []
    for f in (project_root / ".sweepyard" / "runs").glob("*/run.json"):
        doc = read_json(f)
        if doc and (
            doc.get("pipeline") == pipeline or str(doc.get("name", "")).startswith(f"{pipeline}-")
        ):
            runs.append((float(doc.get("started") or 0), doc))
    return max(runs, key=lambda r: r[0])[1] if runs else None


def status(*, cfg: SweepConfig, project_root: Path) -> int:
    """``make status`` (local): the trial states of the pipeline's last local submission."""
    doc = last_run(project_root, cfg.name)
    if doc is None:
        print(f"no local run of pipeline {cfg.name!r} under {project_root / '.sweepyard' / 'runs'}")
        return 1
    sweep_id = str(doc.get("sweep_id") or doc["name"])
    roots = [Path(p) for p in (doc.get("volumes") or {}).values()]
    table = Table(
        title=f"{doc['name']}  {doc.get('status')}  sweep {sweep_id}", title_justify="left"
    )
    for col in ("trial", "state", "attempts", "preempted", "result"):
        table.add_column(col)
    for n in doc.get("nodes") or []:
        trial = (n.get("inputs") or {}).get("trial-id")
        if n.get("type") != "Pod" or not trial:
            continue
        attempts = n.get("attempts") or []
        preempted = sum(bool(a.get("preempted")) or a.get("exit_code") == 143 for a in attempts)
        folder = trial_dir(roots, sweep_id, trial)
        result = read_json(folder / "result.json") if folder else None
        state = (result or {}).get("status") or n.get("phase")
        table.add_row(trial, str(state), str(len(attempts)), str(preempted), trial_metric(folder))
    Console().print(table)
    steps = [n for n in doc.get("nodes") or [] if n.get("type") == "Pod"]
    print(f"{len(steps)} steps; run folder: {project_root / '.sweepyard' / 'runs' / doc['name']}")
    return 0

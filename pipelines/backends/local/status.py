"""``make status`` for the local backend: the trial states of a pipeline's last local run.

Reads ``<project>/.sweepyard/runs/<workflow>/run.json`` (kept current by the running backend) and
the trials' ``result.json`` on the local shared disk. A trial early stopping pruned shows as
``pruned @ step N``, and the compute the pruning saved is printed under the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from components.compute_saved import compute_saved
from components.contract import attempts_file, result_file
from components.phases import format_spans
from components.search.pod_queue import slot_trials
from pipelines.argo.vocab import FAILED
from pipelines.backends.local.progress import read_json, trial_dir, trial_metric
from pipelines.backends.local.report import (
    failure_reason,
    params_text,
    plan_params,
    planned_elsewhere,
    trial_record,
)

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
    for col in ("trial", "params", "state", "attempts", "preempted", "redone", "result"):
        table.add_column(col)
    params = plan_params(roots, sweep_id)
    failed = []
    results: dict[str, dict[str, Any]] = {}
    for n, trial in _rows(doc.get("nodes") or [], roots, sweep_id):
        if n.get("type") == "Pod" and n.get("phase") in FAILED:
            failed.append(n)
        if n.get("type") != "Pod" or not trial:
            continue
        folder = trial_dir(roots, sweep_id, trial)
        record = trial_record(folder, float(doc.get("started") or 0))
        result = read_json(result_file(folder)) if folder else None
        state = trial_state(result) or n.get("phase")
        if result:
            results[trial] = result
        if record["skipped"]:
            state = f"skipped ({state} before)"
        shown = trial_metric(folder)
        if n.get("phase") in FAILED:
            shown = failure_reason(str(n.get("message") or ""), n.get("attempts") or [])[:120]
        table.add_row(
            trial,
            params_text(params.get(trial) or record["params"]),
            str(state),
            str(len(n.get("attempts") or [])),
            str(record["preemptions"]),
            record["redone"],
            shown,
        )
    given = [str(t or "") for _, t in _rows(doc.get("nodes") or [], roots, sweep_id)]
    _add_earlier_rows(table, doc, roots, sweep_id, given, params, results)
    # a pipe or a log file gets the whole table, not 80 wrapped columns
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    _print_after_table(cfg, project_root, doc, roots, sweep_id, given, results, failed)
    return 0


def _add_earlier_rows(
    table: Table,
    doc: dict[str, Any],
    roots: list[Path],
    sweep_id: str,
    given: list[str],
    params: dict[str, dict[str, Any]],
    results: dict[str, dict[str, Any]],
) -> None:
    """The plan's trials no step of this run got that an earlier run finished (skipped)."""
    for trial in planned_elsewhere(roots, sweep_id, given):  # finished before: not handed out
        folder = trial_dir(roots, sweep_id, trial)
        record = trial_record(folder, float(doc.get("started") or 0))
        result = read_json(result_file(folder)) if folder else None
        if not record["skipped"] or not result:
            continue
        results[trial] = result
        table.add_row(
            trial,
            params_text(params.get(trial) or record["params"]),
            f"skipped ({trial_state(result)} before)",
            "0",
            str(record["preemptions"]),
            record["redone"],
            trial_metric(folder),
        )


def _print_after_table(
    cfg: SweepConfig,
    project_root: Path,
    doc: dict[str, Any],
    roots: list[Path],
    sweep_id: str,
    given: list[str],
    results: dict[str, dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """Under the table: the trials' spans, what pruning saved, the cost, why steps failed."""
    spans = [(t, trial_spans(trial_dir(roots, sweep_id, t))) for t in dict.fromkeys(given)]
    spans += [(t, trial_spans(trial_dir(roots, sweep_id, t))) for t in results if t not in given]
    if any(line for _, line in spans):
        print("spans of each trial's last attempt (seconds from its start to its exit):")
        for trial, line in spans:
            if line:
                print(f"  {trial}: {line}")
    found = compute_saved(results.values())
    if found is not None and found.pruned:
        print(f"{found.pruned} trial(s) pruned by early stopping; {found.text()}")
    print(sweep_cost_line(cfg, roots, sweep_id))
    for n in failed[:5]:
        reason = failure_reason(str(n.get("message") or ""), n.get("attempts") or [])
        print(f"{n['name']} {n.get('phase')}: {reason}")
    steps = [n for n in doc.get("nodes") or [] if n.get("type") == "Pod"]
    run_dir = project_root / ".sweepyard" / "runs" / doc["name"]
    print(f"{len(steps)} steps; run folder: {run_dir}")
    _print_artifacts(run_dir)


def _rows(
    nodes: list[dict[str, Any]], roots: list[Path], sweep_id: str
) -> list[tuple[dict[str, Any], str | None]]:
    """``(node, trial id)`` per row: a pod that runs several trials in turn
    (``search.trials_per_pod``) is a row per trial it claimed, the others one row each."""
    rows: list[tuple[dict[str, Any], str | None]] = []
    for n in nodes:
        inputs = n.get("inputs") or {}
        claimed = (
            slot_trials(roots, sweep_id, inputs.get("params")) if n.get("type") == "Pod" else []
        )
        rows += [(n, t) for t in claimed] or [(n, inputs.get("trial-id"))]
    return rows


def sweep_cost_line(cfg: SweepConfig, roots: list[Path], sweep_id: str) -> str:
    """The sweep's cost so far, read as compare reads it (the trials' ``attempts.jsonl``)."""
    from components.budget import Budget, costs
    from components.contract import sweep_dir
    from components.cost import cost_text
    from pipelines.build.steps import budget_arg

    root = next((r for r in roots if sweep_dir(r, sweep_id).is_dir()), None)
    if root is None:
        return "cost: nothing on record yet"
    return cost_text(costs(root, sweep_id, Budget.from_json(budget_arg(cfg))))


def trial_spans(folder: Path | None) -> str:
    """The spans of the trial's last ended attempt (its end record in ``attempts.jsonl``), as the
    trial's log prints them; "" when none are recorded."""
    if folder is None:
        return ""
    try:
        lines = attempts_file(folder).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "end":
            spans = rec.get("spans")
            return format_spans(spans) if isinstance(spans, dict) else ""
    return ""


def trial_state(result: dict[str, Any] | None) -> str | None:
    """``done``, ``failed``, ``pruned @ step 120`` from a trial's result (None: no result yet)."""
    status = (result or {}).get("status")
    if status == "pruned":
        at = (result or {}).get("pruned_at_step")
        return f"pruned @ step {at if at is not None else (result or {}).get('step')}"
    return str(status) if status else None


def _print_artifacts(run_dir: Path) -> None:
    """The workflow's output artifacts the local run kept (``<run dir>/artifacts/<step>/<name>``)."""
    found = sorted(p for p in (run_dir / "artifacts").glob("*/*") if p.exists())
    if found:
        print("artifacts:")
        for path in found:
            print(f"  {path.parent.name}/{path.name}: {path}")

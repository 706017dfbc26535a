"""The fan-in step: rank a sweep's trials, plot them, register the best model, summarise for notify.

``python -m components.compare --sweep-id ID --objective METRIC --direction minimize|maximize
--model-name NAME`` (env ``SWEEPYARD_SHARED``, ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``).

Reads ``sweeps/<id>/plan.json``, every trial's ``result.json`` and MLflow metric history; writes the
leaderboard (markdown, CSV) and two PNGs to the sweep's folder and to the sweep's parent MLflow run;
registers the best trial's model under ``--model-name`` when it beats the version holding the
registered model's ``champion`` alias, and moves the alias to it (``--model-name ""``: registration
is off); writes ``sweeps/<id>/summary.json`` and the
``summary`` output parameter; leaves the leaderboard and plots as the workflow's output artifacts
(and, given ``--kfp-executor-input``, KFP's: :mod:`components.outputs`); prints the leaderboard.
Exit 1 when no trial succeeded (the summary is still written, with ``status: failed``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.budget import Budget, costs
from components.champion import REGISTRATION_OFF, register_best, registration_record
from components.compare_mlflow import deliver_spooled, log_parent, metric_histories, sweep_run
from components.contract import (
    OUTPUT_SUMMARY,
    SharedRootError,
    leaderboard_files,
    outputs_dir,
    plot_files,
    resolve_sweep_id,
    shared_root,
    summary_file,
    sweep_dir,
)
from components.cost import cost_text
from components.fingerprint import inputs_hash, replay
from components.fsio import atomic_write_text
from components.leaderboard import (
    DIRECTIONS,
    TrialRow,
    load_trials,
    rank,
    to_csv,
    to_markdown,
)
from components.outputs import write_step_outputs, write_summary
from components.step_start import start_step
from components.summary import outcomes

log = logging.getLogger("sweepyard.compare")

TOP_N = 10
CURVE_METRICS = ("train_loss",)
SPOOL_DELIVERY_SECONDS = 60.0  # for all the sweep's spools together


def compare(
    sweep_id: str,
    *,
    objective: str,
    direction: str,
    model_name: str,
    shared: Path,
    outputs: Path,
    budget: Budget | None = None,
    top_n: int = TOP_N,
    kfp_executor_input: str | None = None,
    args: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Do the whole step; return (exit code, summary). See the module docstring. ``args``: the
    command line's, hashed with the sweep's files into ``summary["inputs_hash"]`` (:func:`replay`)."""
    from mlflow.tracking import MlflowClient

    budget = budget or Budget()
    rows = rank(load_trials(shared, sweep_id, objective), direction)
    client = MlflowClient()
    folder = sweep_dir(shared, sweep_id)
    deliver_spooled(client, shared, sweep_id, rows, SPOOL_DELIVERY_SECONDS)
    fingerprint = inputs_hash(shared, sweep_id, args or {})
    cost = costs(shared, sweep_id, budget)
    files, markdown = _leaderboard(client, folder, sweep_id, rows, objective, direction, cost)
    parent = sweep_run(client, sweep_id)
    for key in ("leaderboard_md", "leaderboard_csv", "curves", "params"):
        client.log_artifact(parent.info.run_id, str(files[key]), "leaderboard")
    best = rows[0] if rows and rows[0].done else None
    metrics = log_parent(client, parent.info.run_id, rows, objective, cost)
    failed = int(metrics["trials_failed"])
    over_budget = failed > budget.max_failed_trials
    over_reason = f"{failed} trials failed, more than the budget of {budget.max_failed_trials}"
    model, registration = _register(
        client, rows, best, model_name, over_budget, over_reason, parent, shared, sweep_id,
        objective, direction,
    )  # fmt: skip
    summary = build_summary(
        sweep_id, rows, objective, direction, parent, client, files, model, top_n=top_n
    )
    summary.update(registration=registration, max_failed_trials=budget.max_failed_trials)
    summary["inputs_hash"] = fingerprint
    summary["cost"] = {k: v for k, v in cost.items() if k != "trials"}
    if over_budget and best is not None:
        summary["status"] = "failed"
        summary["reason"] = over_reason
    write_summary(summary_file(folder), outputs / OUTPUT_SUMMARY, summary)
    write_step_outputs(sweep_id, summary, files, outputs, kfp_executor_input)
    return _report(sweep_id, rows, summary, files, markdown, failed, budget, best, over_budget)


def _register(
    client: Any,
    rows: Sequence[TrialRow],
    best: TrialRow | None,
    model_name: str,
    over_budget: bool,
    over_reason: str,
    parent: Any,
    shared: Path,
    sweep_id: str,
    objective: str,
    direction: str,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Register the best trial's model when there is one and the failure budget holds: the model
    (None: none registered) and the registration record (why not, when not)."""
    if not model_name:
        return None, registration_record(False, REGISTRATION_OFF)
    if best is None:
        return None, registration_record(False, f"not registered: {_no_best(rows)}")
    if over_budget:
        return None, registration_record(False, f"not registered: {over_reason}")
    run_id = best.run_id or parent.info.run_id
    return register_best(client, best, model_name, shared, sweep_id, objective, direction, run_id)


def _report(
    sweep_id: str,
    rows: Sequence[TrialRow],
    summary: dict[str, Any],
    files: dict[str, Path],
    markdown: str,
    failed: int,
    budget: Budget,
    best: TrialRow | None,
    over_budget: bool,
) -> tuple[int, dict[str, Any]]:
    """Print the leaderboard, plots, links and registration; the step's exit code and summary."""
    print(markdown, end="")
    print(f"plots: {files['curves']}  {files['params']}")
    if summary["mlflow"].get("sweep_runs_url"):
        print(f"mlflow: {summary['mlflow']['sweep_runs_url']}")
    print(summary["registration"]["message"])
    if failed:
        print(f"{failed} failed (budget {budget.max_failed_trials})")
    if best is None:
        log.error("sweep %s: no trial succeeded (%d failed)", sweep_id, len(rows))
        return 1, summary
    if over_budget:  # (an ERROR record: Sentry's event, naming each failed trial and why)
        why = "; ".join(f"{r.trial_id}: {_first_line(r.error)}" for r in rows if r.failed)
        log.error("sweep %s: %s: nothing registered (%s)", sweep_id, summary["reason"], why)
        return 1, summary
    return 0, summary


def _leaderboard(
    client: Any,
    folder: Path,
    sweep_id: str,
    rows: Sequence[TrialRow],
    objective: str,
    direction: str,
    cost: dict[str, Any],
) -> tuple[dict[str, Path], str]:
    """Write the leaderboard (markdown with the cost line, CSV) and the two plots; their paths."""
    from components import plots

    histories = metric_histories(client, rows, [*CURVE_METRICS, objective])
    board_md, board_csv = leaderboard_files(folder)
    curves_png, params_png = plot_files(folder)
    files = {
        "leaderboard_md": board_md,
        "leaderboard_csv": board_csv,
        "curves": plots.curves_png(
            curves_png,
            rows,
            histories,
            sweep_id=sweep_id,
            objective=objective,
            metrics=CURVE_METRICS,
        ),
        "params": plots.params_png(
            params_png,
            rows,
            sweep_id=sweep_id,
            objective=objective,
            direction=direction,
        ),
    }
    markdown = to_markdown(rows, objective, extra=[cost_text(cost)])
    atomic_write_text(files["leaderboard_md"], markdown)
    atomic_write_text(files["leaderboard_csv"], to_csv(rows, objective))
    return files, markdown


def build_summary(
    sweep_id: str,
    rows: Sequence[TrialRow],
    objective: str,
    direction: str,
    parent: Any,
    client: Any,
    files: dict[str, Path],
    model: dict[str, Any] | None,
    *,
    top_n: int,
) -> dict[str, Any]:
    """The small JSON notify reads (also the ``summary`` output parameter)."""
    from components.runtime.alerts import strip_url_credentials

    best = rows[0] if rows and rows[0].done else None
    done = [r for r in rows if r.done]
    experiment_id = parent.info.experiment_id
    base = os.environ.get("MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI", "")
    base = (
        strip_url_credentials(base).rstrip("/") if base.startswith(("http://", "https://")) else ""
    )
    exp_url = f"{base}/#/experiments/{experiment_id}" if base else ""
    started_ms = parent.info.start_time or int(time.time() * 1000)
    return {
        "sweep_id": sweep_id,
        "status": "succeeded" if best else "failed",
        "reason": None if best else _no_best(rows),
        "objective": {"metric": objective, "direction": direction},
        "best": None
        if best is None
        else {
            "trial_id": best.trial_id,
            "params": best.params,
            "value": best.value,
            "run_id": best.run_id,
            "data_hash": best.data_hash,
        },
        **outcomes(rows),
        "app_errors": sum(r.app_errors for r in rows),
        "wall_seconds": round(max(0.0, time.time() - started_ms / 1000), 1),
        "trial_seconds": round(sum(r.wall_seconds for r in rows), 1),
        "leaderboard": [r.to_dict() for r in done[:top_n]],
        "plots": {"curves": str(files["curves"]), "params": str(files["params"])},
        "files": {k: str(v) for k, v in files.items() if k.startswith("leaderboard")},
        "mlflow": {
            "experiment_id": experiment_id,
            "run_id": parent.info.run_id,
            "experiment_url": exp_url,
            "run_url": f"{exp_url}/runs/{parent.info.run_id}" if exp_url else "",
            "sweep_runs_url": _sweep_runs_url(base, experiment_id, sweep_id, objective, direction),
            "best_run_url": f"{exp_url}/runs/{best.run_id}"
            if exp_url and best and best.run_id
            else "",
        },
        "model": model,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _first_line(text: str | None) -> str:
    return text.strip().splitlines()[0][:200] if text and text.strip() else "unknown error"


def _no_best(rows: Sequence[TrialRow]) -> str:
    pruned = sum(r.pruned for r in rows)
    extra = f", {pruned} pruned" if pruned else ""
    return f"no trial succeeded ({sum(r.failed for r in rows)} failed{extra})"


def _sweep_runs_url(
    base: str, experiment_id: str, sweep_id: str, objective: str, direction: str
) -> str:
    if not base:
        return ""
    from components.runtime.tracking import sweep_runs_url

    return sweep_runs_url(base, experiment_id, sweep_id, objective, direction)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m components.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sweep-id", default="", help="default: $SWEEPYARD_WORKFLOW_NAME")
    parser.add_argument("--objective", required=True, help="metric to rank by, e.g. val_loss")
    parser.add_argument("--direction", required=True, choices=DIRECTIONS)
    parser.add_argument("--model-name", required=True, help="MLflow registered model name")
    parser.add_argument(
        "--budget",
        default="",
        help="the sweep's budgets and prices as JSON (components.budget.Budget): failed trials "
        "past max_failed_trials fail the sweep (Katib's maxFailedTrialCount)",
    )
    parser.add_argument("--top", type=int, default=TOP_N, help="leaderboard rows in the summary")
    parser.add_argument(
        "--kfp-executor-input", default="", help="KFP's {{$}}: write KFP's output artifacts"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from components.runtime.alerts import set_alert_tags

    start_step("compare")
    args = _parse_args(argv)
    try:
        sweep_id = resolve_sweep_id(args.sweep_id)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    set_alert_tags(sweep=sweep_id)
    try:
        shared = shared_root().expanduser()
    except SharedRootError as exc:
        log.error("%s", exc)
        return 2
    if not shared.is_dir():
        log.error("SWEEPYARD_SHARED must name the shared folder (got %r)", str(shared))
        return 2
    outputs = outputs_dir()
    replayed = replay(shared, sweep_id, vars(args), outputs, args.kfp_executor_input or None)
    if replayed is not None:
        return replayed
    code, _ = compare(
        sweep_id,
        objective=args.objective,
        direction=args.direction,
        model_name=args.model_name,
        shared=shared,
        outputs=outputs,
        budget=Budget.from_json(args.budget) if args.budget else None,
        top_n=args.top,
        kfp_executor_input=args.kfp_executor_input or None,
        args=vars(args),
    )
    return code


if __name__ == "__main__":
    sys.exit(main())

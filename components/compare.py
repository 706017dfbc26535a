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
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.budget import Budget, costs
from components.contract import SPOOL_FILE, resolve_sweep_id, sweep_dir, trial_dir
from components.cost import cost_text
from components.fsio import atomic_write_text
from components.leaderboard import (
    DIRECTIONS,
    TrialRow,
    load_trials,
    outcomes,
    rank,
    saved,
    to_csv,
    to_markdown,
)
from components.model import TORCHSCRIPT, model_dir

log = logging.getLogger("sweepyard.compare")

TOP_N = 10
CURVE_METRICS = ("train_loss",)
SPOOL_DELIVERY_SECONDS = 60.0  # for all the sweep's spools together
CHAMPION = "champion"  # the registered model's alias for the best version so far
REGISTRATION_OFF = "model registration is off (tracking.model_name: null)"


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
) -> tuple[int, dict[str, Any]]:
    """Do the whole step; return (exit code, summary). See the module docstring."""
    from mlflow.tracking import MlflowClient

    budget = budget or Budget()
    rows = rank(load_trials(shared, sweep_id, objective), direction)
    client = MlflowClient()
    folder = sweep_dir(shared, sweep_id)
    deliver_spooled(client, shared, sweep_id, rows, SPOOL_DELIVERY_SECONDS)
    cost = costs(shared, sweep_id, budget)
    files, markdown = _leaderboard(client, folder, sweep_id, rows, objective, direction, cost)
    parent = sweep_run(client, sweep_id)
    for key in ("leaderboard_md", "leaderboard_csv", "curves", "params"):
        client.log_artifact(parent.info.run_id, str(files[key]), "leaderboard")
    best = rows[0] if rows and rows[0].done else None
    metrics = _log_parent(client, parent.info.run_id, rows, objective, cost)
    failed = int(metrics["trials_failed"])
    over_budget = failed > budget.max_failed_trials
    over_reason = f"{failed} trials failed, more than the budget of {budget.max_failed_trials}"
    model: dict[str, Any] | None = None
    if not model_name:
        registration = _registration(False, REGISTRATION_OFF)
    elif best is None:
        registration = _registration(False, f"not registered: {_no_best(rows)}")
    elif over_budget:
        registration = _registration(False, f"not registered: {over_reason}")
    else:
        model, registration = register_best(
            client, best, model_name, shared, sweep_id, objective, direction
        )

    summary = build_summary(
        sweep_id, rows, objective, direction, parent, client, files, model, top_n=top_n
    )
    summary.update(registration=registration, max_failed_trials=budget.max_failed_trials)
    summary["cost"] = {k: v for k, v in cost.items() if k != "trials"}
    if over_budget and best is not None:
        summary["status"] = "failed"
        summary["reason"] = over_reason
    write_summary(folder / "summary.json", outputs / "summary", summary)
    _write_artifacts(sweep_id, summary, files, outputs, kfp_executor_input)
    print(markdown, end="")
    print(f"plots: {files['curves']}  {files['params']}")
    if summary["mlflow"].get("sweep_runs_url"):
        print(f"mlflow: {summary['mlflow']['sweep_runs_url']}")
    print(registration["message"])
    if failed:
        print(f"{failed} failed (budget {budget.max_failed_trials})")
    if best is None:
        log.error("sweep %s: no trial succeeded (%d failed)", sweep_id, len(rows))
        return 1, summary
    if over_budget:
        log.error("sweep %s: %s: nothing registered", sweep_id, summary["reason"])
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
    files = {
        "leaderboard_md": folder / "leaderboard.md",
        "leaderboard_csv": folder / "leaderboard.csv",
        "curves": plots.curves_png(
            folder / "plots" / "curves.png",
            rows,
            histories,
            sweep_id=sweep_id,
            objective=objective,
            metrics=CURVE_METRICS,
        ),
        "params": plots.params_png(
            folder / "plots" / "params.png",
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


def _log_parent(
    client: Any, run_id: str, rows: Sequence[TrialRow], objective: str, cost: dict[str, Any]
) -> dict[str, float]:
    """The sweep's counts, its best value and its cost as the parent run's metrics."""
    best = rows[0] if rows and rows[0].done else None
    metrics: dict[str, float] = {
        "trials_done": sum(r.done for r in rows),
        "trials_pruned": sum(r.pruned for r in rows),
        "trials_failed": sum(r.failed for r in rows),
        "trials_skipped": sum(r.skipped for r in rows),
        "preemptions": sum(r.preemptions for r in rows),
        "lost_steps": sum(r.lost_steps for r in rows),
        "lost_seconds": sum(r.lost_seconds for r in rows),
        **{f"cost_{k}": cost[k] for k in ("cost", "on_demand", "spot_saved", "lost")},
        "gpu_hours": cost["gpu_hours"],
        "node_hours": cost["node_hours"],
    }
    if (found := saved(rows)) is not None and found.pruned:
        metrics["compute_saved"] = found.fraction
    if best is not None and best.value is not None:
        metrics[f"best_{objective}"] = best.value
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    if best is not None:
        client.set_tag(run_id, "sweepyard.best_trial", best.trial_id)
    return metrics


def deliver_spooled(
    client: Any, shared: Path, sweep_id: str, rows: Sequence[TrialRow], timeout: float
) -> None:
    """Send the points trials left spooled at exit (MLflow was away) before the curves are read.

    A finished trial's step is not run again, so without this its last points would reach MLflow
    only if the sweep were resubmitted. The sender skips what the server already holds, so a
    point is never logged twice. What is still undelivered stays spooled for a rerun.
    """
    from components.runtime import tracking
    from components.runtime.sender import deliver_spool

    deadline = time.monotonic() + timeout
    for row in rows:
        spool = trial_dir(shared, sweep_id, row.trial_id) / SPOOL_FILE
        if not spool.is_file():
            continue
        run_id: str = row.run_id or tracking.ensure_trial_run(
            sweep_id, row.trial_id, mlflow_client=client
        )

        def connect(run_id: str = run_id) -> tuple[Any, str]:
            return client, run_id

        still = deliver_spool(spool, connect, max(1.0, deadline - time.monotonic()))
        if still:
            log.warning(
                "trial %s: %d metric points still spooled in %s", row.trial_id, still, spool
            )
        else:
            log.info("trial %s: delivered its spooled metric points", row.trial_id)


def metric_histories(
    client: Any, rows: Sequence[TrialRow], metrics: Sequence[str]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Each trial's MLflow metric history (one value per step: the last one logged wins)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        if not row.run_id:
            continue
        per_metric = {}
        for metric in dict.fromkeys(metrics):
            by_step = {m.step: m.value for m in client.get_metric_history(row.run_id, metric)}
            per_metric[metric] = sorted(by_step.items())
        out[row.trial_id] = per_metric
    return out


def sweep_run(client: Any, sweep_id: str) -> Any:
    """The sweep's parent run: the plan step created it; found by tag (created if missing)."""
    from components.runtime import tracking

    return client.get_run(tracking.ensure_sweep_run(sweep_id, mlflow_client=client))


def register_best(
    client: Any,
    best: TrialRow,
    model_name: str,
    shared: Path,
    sweep_id: str,
    objective: str,
    direction: str,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Register the best trial's model (any framework) if it beats the champion; move the alias.

    The champion is the version holding ``model_name``'s ``champion`` alias; its ``objective`` and
    ``objective_value`` tags say what it was chosen on. The best trial's model folder is logged to
    its run, registered and made the champion when there is no champion yet or it is strictly
    better on the same objective (lower for minimize, higher for maximize); otherwise nothing is
    registered. Idempotent: a version already registered for this sweep and trial is returned as
    is, and takes the alias only if it should hold it. Returns (the version's summary, or None;
    the registration record: ``registered``, ``message`` (the line compare prints) and the
    ``champion`` compared with, ``{"version", "value"}`` or None).
    """
    champion = _champion(client, model_name)
    for version in client.search_model_versions(f"name = '{model_name}'"):
        tags = version.tags or {}
        if tags.get("sweep") == sweep_id and tags.get("trial") == best.trial_id:
            return _registered_before(client, version, best, champion, objective, direction)
    folder = model_dir(trial_dir(shared, sweep_id, best.trial_id))
    if not folder.is_dir() or not any(folder.iterdir()):
        log.info("%s: the best trial %s saved no model", folder, best.trial_id)
        message = "no model registered: the best trial saved none"
        return None, _registration(False, message, _champion_info(champion))
    why_not = _does_not_beat(champion, best.value, objective, direction)
    if why_not:
        return None, _registration(False, f"not registered: {why_not}", _champion_info(champion))
    import mlflow

    from components.registry import log_folder

    tags = {
        "sweep": sweep_id,
        "trial": best.trial_id,
        "data_hash": best.data_hash or "",
        "objective": objective,
        "objective_value": repr(best.value),
        **_beaten_tags(champion),
    }
    requirements = [f"mlflow=={mlflow.__version__}"]
    if (folder / TORCHSCRIPT).is_file():
        import torch

        requirements.append(f"torch=={torch.__version__.split('+')[0]}")
    run_id = best.run_id or sweep_run(client, sweep_id).info.run_id
    with mlflow.start_run(run_id=run_id):
        uri = log_folder(folder, requirements)
    version = mlflow.register_model(uri, model_name, tags=tags)
    client.set_registered_model_alias(model_name, CHAMPION, str(version.version))
    info = _model_info(model_name, version, champion=True)
    beaten = _champion_info(champion)
    return info, _registration(True, _champion_line(info, best.trial_id, beaten), beaten)


def _registered_before(
    client: Any,
    version: Any,
    best: TrialRow,
    champion: Any,
    objective: str,
    direction: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A resubmitted sweep: its version stands; it takes the alias only if it should hold it."""
    name = version.name
    if champion is not None and str(champion.version) == str(version.version):
        beaten = _tagged_beaten(version.tags or {})  # whom it beat when it took the alias
    else:
        why_not = _does_not_beat(champion, best.value, objective, direction)
        if why_not:
            info = _model_info(name, version, champion=False)
            message = f"model: {info['uri']} (trial {best.trial_id}), not the champion: {why_not}"
            return info, _registration(True, message, _champion_info(champion))
        for key, value in _beaten_tags(champion).items():
            client.set_model_version_tag(name, str(version.version), key, value)
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        beaten = _champion_info(champion)
    info = _model_info(name, version, champion=True)
    return info, _registration(True, _champion_line(info, best.trial_id, beaten), beaten)


def _champion(client: Any, model_name: str) -> Any:
    """The version holding ``model_name``'s champion alias; None with no such model or alias."""
    found = client.search_registered_models(f"name = '{model_name}'")
    registered = next((m for m in found if m.name == model_name), None)
    aliases = dict(getattr(registered, "aliases", None) or {})
    if CHAMPION not in aliases:
        return None
    return client.get_model_version(model_name, str(aliases[CHAMPION]))


def _tag_value(tags: dict[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _champion_info(champion: Any) -> dict[str, Any] | None:
    if champion is None:
        return None
    value = _tag_value(champion.tags or {}, "objective_value")
    return {"version": int(champion.version), "value": value}


def _beaten_tags(champion: Any) -> dict[str, str]:
    """Tags a new champion keeps of the one it replaced (so a resubmit can say it again)."""
    info = _champion_info(champion)
    if info is None:
        return {}
    return {
        "beat_champion_version": str(info["version"]),
        "beat_champion_value": repr(info["value"]),
    }


def _tagged_beaten(tags: dict[str, str]) -> dict[str, Any] | None:
    try:
        return {
            "version": int(tags["beat_champion_version"]),
            "value": _tag_value(tags, "beat_champion_value"),
        }
    except (KeyError, ValueError):
        return None


def _does_not_beat(
    champion: Any, value: float | None, objective: str, direction: str
) -> str | None:
    """Why the best trial's ``value`` may not take the alias from ``champion``; None if it may."""
    if champion is None:
        return None
    tags = champion.tags or {}
    version = champion.version
    metric = tags.get("objective")
    if metric is not None and metric != objective:
        return f"champion v{version} was chosen on '{metric}', this sweep optimises '{objective}'"
    held = _tag_value(tags, "objective_value")
    if metric is None or held is None:
        return f"champion v{version} has no objective and objective_value tags to compare with"
    if value is None:
        return f"the best trial has no {objective} value"
    better = value < held if direction == "minimize" else value > held
    if better:
        return None
    return f"best {value:.4g} does not beat champion v{version} ({held:.4g})"


def _champion_line(info: dict[str, Any], trial: str, beaten: dict[str, Any] | None) -> str:
    line = f"model: {info['uri']} (trial {trial}), now the champion"
    if beaten is not None:
        line += f" (beats champion v{beaten['version']} ({_fmt(beaten['value'])}))"
    return line


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def _registration(
    registered: bool, message: str, champion: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``summary["registration"]``: what compare did with the model, in the line it printed."""
    return {"registered": registered, "message": message, "champion": champion}


def _model_info(name: str, version: Any, *, champion: bool) -> dict[str, Any]:
    return {
        "name": name,
        "version": int(version.version),
        "uri": f"models:/{name}/{version.version}",
        "champion": champion,
    }


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


def _no_best(rows: Sequence[TrialRow]) -> str:
    pruned = sum(r.pruned for r in rows)
    extra = f", {pruned} pruned" if pruned else ""
    return f"no trial succeeded ({sum(r.failed for r in rows)} failed{extra})"


def _write_artifacts(
    sweep_id: str,
    summary: dict[str, Any],
    files: dict[str, Path],
    outputs: Path,
    kfp_executor_input: str | None,
) -> None:
    from components import outputs as artifacts

    page = artifacts.plots_html(sweep_id, {k: files[k] for k in ("curves", "params")})
    artifacts.write_argo_artifacts(outputs, files["leaderboard_md"], page)
    if kfp_executor_input:
        artifacts.write_kfp_outputs(kfp_executor_input, summary, files["leaderboard_md"], page)


def _sweep_runs_url(
    base: str, experiment_id: str, sweep_id: str, objective: str, direction: str
) -> str:
    if not base:
        return ""
    from components.runtime.tracking import sweep_runs_url

    return sweep_runs_url(base, experiment_id, sweep_id, objective, direction)


def write_summary(path: Path, output: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    output.parent.mkdir(parents=True, exist_ok=True)  # the step's output parameter, not shared
    output.write_text(json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str))


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
    from components.runtime.alerts import init_alerts, set_alert_tags

    init_alerts("compare")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parse_args(argv)
    try:
        sweep_id = resolve_sweep_id(args.sweep_id)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    set_alert_tags(sweep=sweep_id)
    shared = Path(os.environ.get("SWEEPYARD_SHARED", "")).expanduser()
    if not os.environ.get("SWEEPYARD_SHARED") or not shared.is_dir():
        log.error("SWEEPYARD_SHARED must name the shared folder (got %r)", str(shared))
        return 2
    outputs = Path(os.environ.get("SWEEPYARD_OUTPUTS", "/tmp/outputs"))
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
    )
    return code


if __name__ == "__main__":
    sys.exit(main())

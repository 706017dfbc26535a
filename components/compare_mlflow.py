"""What compare reads from and writes to MLflow: the spooled points delivered before the curves
are read, each trial's metric history, the sweep's parent run and its metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.contract import spool_file, trial_dir
from components.leaderboard import TrialRow, saved

log = logging.getLogger("sweepyard.compare")


def log_parent(
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
        spool = spool_file(trial_dir(shared, sweep_id, row.trial_id))
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

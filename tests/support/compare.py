"""A finished sweep recorded in a real MLflow server (the tracking fixture and make_sweep) that the
compare, champion and resubmit tests read. No tests here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.contract import canonical_json, trial_id
from components.model_folder import save_module

# (lr, hidden) -> final val_loss; the best (lowest) is lr=0.03, hidden=128.
KNOWN = {
    (0.003, 32): 0.62,
    (0.003, 128): 0.41,
    (0.03, 32): 0.35,
    (0.03, 128): 0.21,
}

STEPS = 50


def build_model(config: dict[str, Any]) -> nn.Module:
    """A trainer's model; compare registers it without this class (TorchScript in the folder)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(config["inputs"], config["hidden"]), nn.ReLU(), nn.Linear(config["hidden"], 10)
    )


def _curve(final: float, step: int) -> float:
    return final + (2.3 - final) * (1 - step / STEPS) ** 2


def make_sweep(
    shared: Path,
    sweep_id: str,
    *,
    mlflow_experiment: str,
    known: dict[tuple[float, int], float] = KNOWN,
    failed: tuple[float, int] | None = (0.3, 32),
    missing: tuple[float, int] | None = (0.3, 128),
) -> dict[tuple[float, int], str]:
    """A sweep folder and MLflow runs as plan + train would leave them; returns trial ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(mlflow_experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(mlflow_experiment)
    combos = [*known, *(c for c in (failed, missing) if c)]
    ids: dict[tuple[float, int], str] = {}
    plan = []
    for lr, hidden in combos:
        params = {"lr": lr, "hidden": hidden, "batch_size": 32, "steps": STEPS}
        tid = trial_id(params)
        ids[(lr, hidden)] = tid
        plan.append({"id": tid, "params": canonical_json(params)})
        if (lr, hidden) == missing:
            continue  # planned, never wrote a result (its pod was lost for good, say)
        done = (lr, hidden) != failed
        last = STEPS if done else 20
        final = known.get((lr, hidden), 1.5)
        run_id = _log_trial_run(client, exp_id, sweep_id, tid, final=final, last=last, done=done)
        folder = shared / "sweeps" / sweep_id / "trials" / tid
        folder.mkdir(parents=True)
        result = _trial_result(
            sweep_id, tid, params, final=final, last=last, done=done, run_id=run_id
        )
        (folder / "result.json").write_text(json.dumps(result))
        if done:
            config = {"inputs": 64, "hidden": hidden}
            save_module(build_model(config), folder / "model")
    (shared / "sweeps" / sweep_id / "plan.json").write_text(json.dumps(plan))
    return ids


def _log_trial_run(
    client: Any, exp_id: str, sweep_id: str, tid: str, *, final: float, last: int, done: bool
) -> str:
    """The trial's MLflow run: its tags, loss curves up to step ``last``, and how it ended."""
    import mlflow

    run = client.create_run(
        exp_id,
        run_name=tid,
        tags={
            "sweepyard.sweep_id": sweep_id,
            "sweepyard.trial_id": tid,
            "sweepyard.role": "trial",
        },
    )
    metrics = [
        mlflow.entities.Metric("train_loss", _curve(final * 0.8, s), 0, s) for s in range(last + 1)
    ] + [mlflow.entities.Metric("val_loss", _curve(final, s), 0, s) for s in range(0, last + 1, 10)]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, "FINISHED" if done else "FAILED")
    return str(run.info.run_id)


def _trial_result(
    sweep_id: str,
    tid: str,
    params: dict[str, Any],
    *,
    final: float,
    last: int,
    done: bool,
    run_id: str,
) -> dict[str, Any]:
    """The result.json train writes for a trial that ended at step ``last``, done or failed."""
    hidden = params["hidden"]
    return {
        "sweep_id": sweep_id,
        "trial_id": tid,
        "params": params,
        "status": "done" if done else "failed",
        "error": None if done else "RuntimeError: loss is NaN at step 20",
        "step": last,
        "metrics": {
            "val_loss": _curve(final, last),
            "val_accuracy": 1 - final / 2,
            "train_loss": 0.1,
        },
        "objective": {
            "metric": "val_loss",
            "direction": "minimize",
            "value": final if done else None,
        },
        "run_id": run_id,
        "data_hash": "d1g175",
        "attempts": 2 if hidden == 128 else 1,
        "preemptions": 1 if hidden == 128 else 0,
        "app_errors": 0 if done else 3,
        "wall_seconds": 12.5,
        "image": "img:1",
        "finished_at": "2026-11-26T15:00:00+00:00",
    }

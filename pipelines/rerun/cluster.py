"""A rerun on a cluster: submitted to Argo or KFP, then awaited on the MLflow server."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from components import provenance as pv
from pipelines.config import SweepConfig
from pipelines.rerun.manifest import RerunPlan, rerun_manifest
from pipelines.rerun.origin import RerunError


def submit_to_cluster(backend: str, rcfg: SweepConfig, plan: RerunPlan, root: Path) -> int:
    """Create the rerun's Argo Workflow, or start its KFP run."""
    if backend == "argo":
        from pipelines.backends import argo

        manifest = rerun_manifest(rcfg, plan)
        return argo.submit(manifest, cfg=rcfg, sweep_id=plan.sweep_id, env=os.environ)
    if plan.pin is not None or plan.continue_from:
        what = "the recorded data version" if plan.pin is not None else "--from-checkpoint"
        raise RerunError(
            f"BACKEND=kfp cannot rerun with {what}: a KFP run has no step that hands a trial a "
            "version or a checkpoint already on the shared disk; use BACKEND=argo or the local backend"
        )
    from pipelines.backends import kfp as kfp_backend
    from pipelines.build.kfp import compile_package

    package = root / ".sweepyard" / "kfp" / f"{rcfg.name}-{plan.sweep_id}.kfp.yaml"
    package.parent.mkdir(parents=True, exist_ok=True)
    compile_package(rcfg, package)
    return kfp_backend.submit(package, cfg=rcfg, sweep_id=plan.sweep_id, env=os.environ)


TERMINAL = {"FINISHED": 0, "FAILED": 1, "KILLED": 1}


def wait_for_run(
    client: Any,
    experiment: str,
    sweep_id: str,
    trial: str,
    timeout_s: float,
    poll_s: float = 5.0,
) -> tuple[int, str | None]:
    """Wait on the MLflow server for the rerun trial's run to end (a cluster's rerun): its exit
    (0 finished, 1 failed or killed, 124 still running after ``timeout_s``) and the run's id."""
    exp = client.get_experiment_by_name(experiment)
    where = f"tags.`{pv.TAG_SWEEP}` = '{sweep_id}' and tags.`{pv.TAG_TRIAL}` = '{trial}'"
    where += f" and tags.`{pv.TAG_ROLE}` = 'trial'"
    deadline, seen = time.monotonic() + timeout_s, None
    print(
        f"waiting for trial {trial} of {sweep_id} on {client.tracking_uri} (up to {timeout_s:.0f} s)"
    )
    while True:
        runs = client.search_runs([exp.experiment_id], where) if exp is not None else []
        if runs:
            run = runs[0]
            if run.info.status != seen:
                seen = run.info.status
                print(f"  run {run.info.run_id}: {seen}", flush=True)
            if seen in TERMINAL:
                return TERMINAL[seen], run.info.run_id
        if time.monotonic() >= deadline:
            print(
                f"rerun {sweep_id}: its trial has not ended after {timeout_s:.0f} s; it goes on "
                "in the cluster (WAIT_TIMEOUT=... waits longer)",
                file=sys.stderr,
            )
            return 124, None
        if exp is None:
            exp = client.get_experiment_by_name(experiment)
        time.sleep(poll_s)

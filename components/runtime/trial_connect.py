"""A trial's MLflow run, as the sender connects to it: found again or created (with its lineage,
params and tags) in as few requests as it takes, without importing mlflow for an ``http(s)://``
server."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from components.contract import shared_root, trial_dir
from components.runtime import lineage, tracking
from components.runtime.spans import SPANS
from components.runtime.trial import AttemptLog, run_label
from components.runtime.trial_spec import TrialSpec

log = logging.getLogger("components.train")


def connect_run(spec: TrialSpec, attempt: AttemptLog) -> Any:
    """The sender's ``connect`` (None: tracking is off): finds or creates the trial's run in as few
    requests as it takes (:func:`tracking.open_trial_run`), without importing mlflow for an
    ``http(s)://`` server (:func:`tracking.trial_client`)."""
    # The lineage: lineage.json once, and on the run with its params (components/runtime/lineage.py)
    record = lineage.Lineage(spec, trial_dir(shared_root(), spec.sweep_id, spec.trial_id))
    record.write_once()
    uri = tracking.tracking_uri()
    if uri is None:
        log.warning("MLFLOW_TRACKING_URI is not set: metrics go to TensorBoard only")
        return None
    env = os.environ

    def connect() -> Any:
        started = time.monotonic()
        client = tracking.trial_client(uri)
        commit = tracking.git_commit()
        tags = {
            "sweepyard.data_hash": spec.data_hash,
            "sweepyard.image": env.get("SWEEPYARD_IMAGE", ""),
            "sweepyard.git_commit": commit,
            "sweepyard.workflow": env.get("SWEEPYARD_WORKFLOW_NAME", ""),
            "sweepyard.attempt": str(attempt.number),
            "sweepyard.preemptions": str(attempt.history.preemptions),
            "sweepyard.app_errors": str(attempt.history.app_errors),
            "mlflow.source.git.commit": commit,
        }
        first = attempt.history.first_start or attempt.started  # the run spans every attempt
        run, created = tracking.open_trial_run(
            spec.sweep_id,
            spec.trial_id,
            mlflow_client=client,
            tags=tags,  # (a run this attempt creates starts with them: RUNNING)
            start_time=first,
            run_name=run_label(shared_root(), spec.sweep_id, spec.trial_id),  # as TensorBoard's
        )
        run_id = str(run.info.run_id)
        if created or not run.data.params:  # the attempt that created the run
            params = dict(sorted(spec.params.items()))
            # the lineage before the params (they mark it done), in the params' request
            record.log_to(client, run_id, params=params, tags={} if created else tags)
        else:
            tracking.log_batch(client, run_id, tags=tags)
        if not created and run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        SPANS.since("mlflow", started)
        requests = getattr(client, "requests", None)
        if requests is not None:
            SPANS.count("mlflow_requests", requests)
        return client, run_id, ({} if created else tracking.latest_steps(run))

    return connect

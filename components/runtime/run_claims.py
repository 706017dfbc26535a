"""A run found again by its identity tags, or created once: racing creators settle on the first
to claim the run's file on the shared disk (``mlflow_run_id`` in the sweep's or the trial's folder,
created atomically: a hard link that fails when the name exists); the others delete theirs. Without
a shared disk the oldest run found is kept, best effort (see :mod:`components.runtime.tracking`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.contract import SharedRootError, mlflow_run_file, shared_root, sweep_dir, trial_dir
from components.links import TAG_SWEEP, TAG_TRIAL

log = logging.getLogger("components.runtime.tracking")


def tag_filter(tags: Mapping[str, str]) -> str:
    parts = []
    for key, value in tags.items():
        escaped = value.replace("'", "\\'")
        parts.append(f"tags.`{key}` = '{escaped}'")
    return " and ".join(parts)


def find_runs(mlflow_client: Any, experiment_id: str, tags: Mapping[str, str]) -> list[Any]:
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=tag_filter(tags),
        max_results=100,
        order_by=["start_time ASC"],
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def open_run(
    mlflow_client: Any,
    experiment_id: str,
    identity: Mapping[str, str],
    tags: Mapping[str, str],
    run_name: str,
    start_time: float | None = None,
) -> tuple[Any, bool]:
    """The run of ``identity`` (found, or created with ``tags``) and whether this call created it."""
    claim = claim_file(identity)
    claimed = claimed_run(mlflow_client, claim)
    if claimed is not None:
        return claimed, False
    existing = find_runs(mlflow_client, experiment_id, identity)
    if existing:
        winner = claim_run(claim, str(existing[0].info.run_id))
        if winner == str(existing[0].info.run_id):
            return existing[0], False
        return mlflow_client.get_run(winner), False
    run = mlflow_client.create_run(
        experiment_id,
        tags={**tags, **identity},
        run_name=run_name,
        start_time=int(start_time * 1000) if start_time else None,
    )
    created = str(run.info.run_id)
    if claim is not None:
        winner = claim_run(claim, created)
    else:
        runs = find_runs(mlflow_client, experiment_id, identity)
        winner = str(runs[0].info.run_id) if runs else created
    if winner == created:
        return run, True
    log.info("another process created run %s first; deleting ours (%s)", winner, created)
    mlflow_client.delete_run(created)
    return mlflow_client.get_run(winner), False


def claim_file(identity: Mapping[str, str], env: Mapping[str, str] | None = None) -> Path | None:
    """Where the run of ``identity`` is claimed on the shared disk (None: no shared disk)."""
    try:
        root = shared_root(env)
    except SharedRootError:
        return None
    folder = sweep_dir(root, identity[TAG_SWEEP])
    if TAG_TRIAL in identity:
        folder = trial_dir(root, identity[TAG_SWEEP], identity[TAG_TRIAL])
    return mlflow_run_file(folder)


def claimed_run(mlflow_client: Any, claim: Path | None) -> Any:
    """The run claimed in ``claim``, if it is a live run of this server (one request). A claim
    naming a run the server does not have (a reset store, another server) or has deleted is
    removed."""
    try:
        run_id = claim.read_text(encoding="utf-8").strip() if claim else ""
    except OSError:
        return None
    if not run_id or claim is None:
        return None
    run = None
    try:
        run = mlflow_client.get_run(run_id)
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise  # the server is away: nothing is decided
    if run is None or run.info.lifecycle_stage != "active":
        log.info("%s names run %s, which this server does not have: claimed again", claim, run_id)
        claim.unlink(missing_ok=True)
        return None
    return run


def claim_run(claim: Path | None, run_id: str) -> str:
    """Claim ``run_id`` in ``claim`` unless a run is claimed there already; the claimed run."""
    if claim is None:
        return run_id
    claim.parent.mkdir(parents=True, exist_ok=True)
    tmp = claim.with_name(f".{claim.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(run_id, encoding="utf-8")
    try:
        os.link(tmp, claim)  # atomic: fails when the name exists, never half-written
        return run_id
    except FileExistsError:
        current = claim.read_text(encoding="utf-8").strip()
        return current or run_id
    finally:
        tmp.unlink(missing_ok=True)

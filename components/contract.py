"""The contract between ``pipelines/`` and ``components/``: exit codes, the shared-disk layout, ids.

Pure (standard library only, no I/O at import): both halves import it, so a rule here is spelled
once. DESIGN.md, "Contracts"::

    data/<dataset>/<content-hash>/...            MANIFEST.json, then .complete
    sweeps/<sweep-id>/plan.json
    sweeps/<sweep-id>/trials/<trial-id>/checkpoints/  model/  work/  result.json  attempts.jsonl
        lineage.json           (what the trial ran with: commit, lock, image, data, params)
        continued.json         (a rerun's trial that continues another's checkpoint: from where)
        metrics.spool.jsonl    (metric points MLflow has not acknowledged, left at a trial's exit)
    tensorboard/<sweep-id>/<trial-id>/

Exit codes of a component: ``0`` done, ``1`` an error worth retrying (an application error of a
trial, a transient failure of a fetch), ``3`` give up (bad input, a spent budget: never retried),
``143`` preempted after SIGTERM (retried, resumed from the last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXIT_DONE = 0
EXIT_RETRY = 1  # an application error (trial) or a transient failure (fetch): retried
EXIT_GIVE_UP = 3
EXIT_PREEMPTED = 143

SHARED_ENV = "SWEEPYARD_SHARED"  # the root of the shared disk, in every component's env
SWEEPS_DIR = "sweeps"
TRIALS_DIR = "trials"
TENSORBOARD_DIR = "tensorboard"
PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
SPOOL_FILE = "metrics.spool.jsonl"  # delivered by the trial's next attempt, or by compare
MLFLOW_RUN_FILE = "mlflow_run_id"  # the sweep's or trial's run, claimed by the first creator
COLLECTED_FILE = "collected.jsonl"  # what a program's collectors read, (metric, step) records
LINEAGE_FILE = "lineage.json"  # what a trial ran with, written once (components/runtime/lineage.py)
CONTINUED_FILE = "continued.json"  # a rerun's trial carried over from another: sweep, trial, step
WORK_DIR = "work"  # a trial's working folder: a program's cwd (and HOME), kept across attempts
QUEUES_DIR = "queues"  # trials_per_pod > 1: queues/<queue-id>/<trial-id>.claim, a round's claims
CLAIM_SUFFIX = ".claim"

TRIAL_ID_LENGTH = 12
# Sweep ids name folders on the shared disk and MLflow tags: keep them to a DNS-1123-like alphabet.
SWEEP_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def canonical_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON of a trial's params: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def trial_id(params: Mapping[str, Any]) -> str:
    """Short hash of the canonical params: stable across retries and resubmits."""
    return hashlib.sha256(canonical_json(params).encode("utf-8")).hexdigest()[:TRIAL_ID_LENGTH]


def resolve_sweep_id(sweep_id: str | None, env: Mapping[str, str] | None = None) -> str:
    """The sweep id: the given one, else the workflow's name (``SWEEPYARD_WORKFLOW_NAME``).

    Raises:
        ValueError: when neither is set, or the id is not a valid folder/tag name.
    """
    env = os.environ if env is None else env
    value = (sweep_id or "").strip() or env.get("SWEEPYARD_WORKFLOW_NAME", "").strip()
    if not value:
        raise ValueError("no sweep id: pass --sweep-id or set SWEEPYARD_WORKFLOW_NAME")
    return check_sweep_id(value)


def check_sweep_id(value: str) -> str:
    """``value`` when it is a valid sweep id (a folder and a tag name), else :class:`ValueError`."""
    if not SWEEP_ID_RE.match(value):
        raise ValueError(
            f"invalid sweep id {value!r}: use lowercase letters, digits, '.', '_' and '-' "
            "(at most 63, starting and ending with a letter or digit)"
        )
    return value


def sweep_dir(shared: Path, sweep_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>``."""
    return shared / SWEEPS_DIR / sweep_id


def trial_dir(shared: Path, sweep_id: str, trial_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/trials/<trial-id>``."""
    return sweep_dir(shared, sweep_id) / TRIALS_DIR / trial_id


def queue_dir(shared: Path, sweep_id: str, queue_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/queues/<queue-id>``: one round's claim files."""
    return sweep_dir(shared, sweep_id) / QUEUES_DIR / queue_id


def work_dir(trial_dir: Path) -> Path:
    """``<trial dir>/work``: where a trial's program runs and writes what it writes relatively."""
    return trial_dir / WORK_DIR


def relative_path_problem(value: str) -> str | None:
    """Why ``value`` cannot name a place under the shared disk's root, or ``None`` when it can.

    A configured path is relative to the root and stays inside it: not absolute, no ``..``, no
    empty or ``.`` parts.
    """
    if not value:
        return "must not be empty"
    if value.startswith("/"):
        return f"{value!r} must be relative to the shared disk's root, not absolute"
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"{value!r} must stay on the shared disk: no '..', '.' or empty parts"
    return None

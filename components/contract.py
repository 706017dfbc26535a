"""The contract between ``pipelines/`` and ``components/``: exit codes, the shared-disk layout, ids.

Pure (standard library only, no I/O at import): both halves import it, so a rule here is spelled
once. DESIGN.md, "Contracts"::

    data/<dataset>/<content-hash>/...            MANIFEST.json, then .complete
    sweeps/<sweep-id>/plan.json  study.journal  summary.json  leaderboard.md|csv  plots/
    sweeps/<sweep-id>/trials/<trial-id>/checkpoints/  model/  work/  result.json  attempts.jsonl
        lineage.json           (what the trial ran with: commit, lock, image, data, params)
        continued.json         (a rerun's trial that continues another's checkpoint: from where)
        metrics.spool.jsonl    (metric points MLflow has not acknowledged, left at a trial's exit)
        mlflow_run_id  pruned.json  collected.jsonl  metrics.jsonl  .supervisor-checkpoints/
    tensorboard/<sweep-id>/<trial-id>/

This module is the only place a file or folder name on the shared disk (or in a step's outputs
folder) is spelled: every other module builds its paths with the helpers below, and
``tests/components/test_layout.py`` keeps it so. :func:`shared_root` is the one way to find the disk.

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
OUTPUTS_ENV = "SWEEPYARD_OUTPUTS"  # where a step writes its output parameters
DEFAULT_MOUNT_PATH = "/mnt/shared"  # where a pod mounts the shared claim (cluster.mount_path)
DEFAULT_OUTPUTS_DIR = "/tmp/outputs"  # the manifest's outputs folder ($SWEEPYARD_OUTPUTS)

# data/<dataset>/<content-hash>/
DATA_DIR = "data"
MANIFEST_FILE = "MANIFEST.json"  # a dataset version's (and a checkpoint's) manifest, written last
COMPLETE_FILE = ".complete"  # a dataset version is done once it exists
# sweeps/<sweep-id>/
SWEEPS_DIR = "sweeps"
PLAN_FILE = "plan.json"
STUDY_FILE = "study.journal"  # Optuna's journal storage of an adaptive sweep
SUMMARY_FILE = "summary.json"  # compare's summary (notify reads it)
SWEEP_RUN_ENDED_FILE = "mlflow-ended.json"  # how notify last ended the sweep's parent run
LEADERBOARD_MD = "leaderboard.md"
LEADERBOARD_CSV = "leaderboard.csv"
PLOTS_DIR = "plots"
CURVES_PLOT = "curves.png"
PARAMS_PLOT = "params.png"
# sweeps/<sweep-id>/trials/<trial-id>/
TRIALS_DIR = "trials"
RESULT_FILE = "result.json"
ATTEMPTS_FILE = "attempts.jsonl"  # the one record every count is read from
CHECKPOINTS_DIR = "checkpoints"  # the harness's checkpoints, or a program's own
SUPERVISOR_CHECKPOINTS_DIR = ".supervisor-checkpoints"  # the harness's, beside a program's own
LATEST_FILE = "LATEST"  # a checkpoint folder's pointer to its newest step folder
MODEL_DIR = "model"
WORK_DIR = "work"  # a trial's working folder: a program's cwd (and HOME), kept across attempts
SPOOL_FILE = "metrics.spool.jsonl"  # delivered by the trial's next attempt, or by compare
MLFLOW_RUN_FILE = "mlflow_run_id"  # the sweep's or trial's run, claimed by the first creator
COLLECTED_FILE = "collected.jsonl"  # what a program's collectors read, (metric, step) records
METRICS_FILE = "metrics.jsonl"  # a program's SWEEPYARD_METRICS
PRUNED_FILE = "pruned.json"  # the pruner's decision, kept across a kill
LINEAGE_FILE = "lineage.json"  # what a trial ran with, written once (components/runtime/lineage.py)
CONTINUED_FILE = "continued.json"  # a rerun's trial carried over from another: sweep, trial, step
RANKS_DIR = "ranks"  # ranks/<attempt>/rank-<r>.json: how a rank of a distributed trial failed
RANK_RECORDS = "rank-*.json"
WORK_TMP_DIR = ".tmp"  # work/.tmp: a program's TMPDIR
# tensorboard/<sweep-id>/<trial-id> <varying params>/
TENSORBOARD_DIR = "tensorboard"
# the step outputs folder ($SWEEPYARD_OUTPUTS)
OUTPUT_TRIALS = "trials"  # plan's and suggest's fan-out items
OUTPUT_MORE = "more"  # suggest's: whether another round follows
OUTPUT_SUMMARY = "summary"  # compare's summary parameter
OUTPUT_DATA_PATH = "path"  # fetch's: the dataset version's folder
OUTPUT_DATA_HASH = "hash"  # fetch's: its content hash
PLOTS_PAGE = "plots.html"  # compare's Argo artifact: the plots in one page (beside leaderboard.md)
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


class SharedRootError(ValueError):
    """``SWEEPYARD_SHARED`` is needed and not set."""


def shared_root(env: Mapping[str, str] | None = None, default: str | Path | None = None) -> Path:
    """The shared disk's root: ``$SWEEPYARD_SHARED``, else ``default`` when the caller has one.

    Raises:
        SharedRootError: when the variable is unset or empty and no ``default`` is given.
    """
    env = os.environ if env is None else env
    value = env.get(SHARED_ENV, "").strip()
    if value:
        return Path(value)
    if default is not None:
        return Path(default)
    raise SharedRootError(f"{SHARED_ENV} is not set: it must name the shared disk's root folder")


def outputs_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where a step writes its output parameters: ``$SWEEPYARD_OUTPUTS``, else ``/tmp/outputs``."""
    env = os.environ if env is None else env
    return Path(env.get(OUTPUTS_ENV) or DEFAULT_OUTPUTS_DIR)


# data/


def datasets_dir(shared: Path, dataset: str) -> Path:
    """``<shared>/data/<dataset>``: every version of a dataset, and their locks and temporaries."""
    return shared / DATA_DIR / dataset


def dataset_dir(shared: Path, dataset: str, digest: str) -> Path:
    """``<shared>/data/<dataset>/<content-hash>``: one version of a dataset."""
    return datasets_dir(shared, dataset) / digest


def dataset_temporary(shared: Path, dataset: str, digest: str) -> Path:
    """``<shared>/data/<dataset>/.tmp-<hash>``: a download in progress (kept across kills)."""
    return datasets_dir(shared, dataset) / f".tmp-{digest}"


def dataset_lock(shared: Path, dataset: str, digest: str) -> Path:
    """``<shared>/data/<dataset>/.lock-<hash>``: what concurrent fetchers of a version wait on."""
    return datasets_dir(shared, dataset) / f".lock-{digest}"


def manifest_file(folder: Path) -> Path:
    """``<folder>/MANIFEST.json`` of a dataset version or a checkpoint."""
    return folder / MANIFEST_FILE


def complete_file(version: Path) -> Path:
    """``<data version>/.complete``: written last, once the version is whole."""
    return version / COMPLETE_FILE


# sweeps/<sweep-id>/


def sweeps_dir(shared: Path) -> Path:
    """``<shared>/sweeps``."""
    return shared / SWEEPS_DIR


def sweep_dir(shared: Path, sweep_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>``."""
    return sweeps_dir(shared) / sweep_id


def plan_file(shared: Path, sweep_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/plan.json``."""
    return sweep_dir(shared, sweep_id) / PLAN_FILE


def study_file(shared: Path, sweep_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/study.journal``."""
    return sweep_dir(shared, sweep_id) / STUDY_FILE


def summary_file(sweep: Path) -> Path:
    """``<sweep dir>/summary.json``."""
    return sweep / SUMMARY_FILE


def leaderboard_files(sweep: Path) -> tuple[Path, Path]:
    """``<sweep dir>/leaderboard.md`` and ``leaderboard.csv``."""
    return sweep / LEADERBOARD_MD, sweep / LEADERBOARD_CSV


def plot_files(sweep: Path) -> tuple[Path, Path]:
    """``<sweep dir>/plots/curves.png`` and ``plots/params.png``."""
    return sweep / PLOTS_DIR / CURVES_PLOT, sweep / PLOTS_DIR / PARAMS_PLOT


def trials_dir(shared: Path, sweep_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/trials``."""
    return sweep_dir(shared, sweep_id) / TRIALS_DIR


def trial_dir(shared: Path, sweep_id: str, trial_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/trials/<trial-id>``."""
    return trials_dir(shared, sweep_id) / trial_id


# sweeps/<sweep-id>/trials/<trial-id>/


def queue_dir(shared: Path, sweep_id: str, queue_id: str) -> Path:
    """``<shared>/sweeps/<sweep-id>/queues/<queue-id>``: one round's claim files."""
    return sweep_dir(shared, sweep_id) / QUEUES_DIR / queue_id


def work_dir(trial_dir: Path) -> Path:
    """``<trial dir>/work``: where a trial's program runs and writes what it writes relatively."""
    return trial_dir / WORK_DIR


def result_file(trial_dir: Path) -> Path:
    """``<trial dir>/result.json``."""
    return trial_dir / RESULT_FILE


def attempts_file(trial_dir: Path) -> Path:
    """``<trial dir>/attempts.jsonl``."""
    return trial_dir / ATTEMPTS_FILE


def checkpoints_dir(trial_dir: Path) -> Path:
    """``<trial dir>/checkpoints``."""
    return trial_dir / CHECKPOINTS_DIR


def latest_file(checkpoints: Path) -> Path:
    """``<checkpoint folder>/LATEST``."""
    return checkpoints / LATEST_FILE


def model_dir(trial_dir: Path) -> Path:
    """``<trial dir>/model``: where a trial's final model goes."""
    return trial_dir / MODEL_DIR


def spool_file(trial_dir: Path) -> Path:
    """``<trial dir>/metrics.spool.jsonl``."""
    return trial_dir / SPOOL_FILE


def lineage_file(trial_dir: Path) -> Path:
    """``<trial dir>/lineage.json``."""
    return trial_dir / LINEAGE_FILE


def continued_file(trial_dir: Path) -> Path:
    """``<trial dir>/continued.json``: whose checkpoint a rerun's trial continued from."""
    return trial_dir / CONTINUED_FILE


def pruned_file(trial_dir: Path) -> Path:
    """``<trial dir>/pruned.json``."""
    return trial_dir / PRUNED_FILE


def rank_records_dir(trial_dir: Path, attempt: int | None = None) -> Path:
    """``<trial dir>/ranks`` (``ranks/<attempt>`` for one attempt)."""
    folder = trial_dir / RANKS_DIR
    return folder if attempt is None else folder / str(attempt)


def rank_record_file(trial_dir: Path, attempt: int, rank: int) -> Path:
    """``<trial dir>/ranks/<attempt>/rank-<r>.json``."""
    return rank_records_dir(trial_dir, attempt) / RANK_RECORDS.replace("*", str(rank))


def work_tmp_dir(trial_dir: Path) -> Path:
    """``<trial dir>/work/.tmp``: a program's ``TMPDIR``."""
    return work_dir(trial_dir) / WORK_TMP_DIR


def sweep_run_ended_file(sweep: Path) -> Path:
    """``<sweep dir>/mlflow-ended.json``: how notify last ended the sweep's parent run."""
    return sweep / SWEEP_RUN_ENDED_FILE


def mlflow_run_file(folder: Path) -> Path:
    """``<sweep or trial dir>/mlflow_run_id``."""
    return folder / MLFLOW_RUN_FILE


# tensorboard/


def tensorboard_root(shared: Path, root: str = TENSORBOARD_DIR) -> Path:
    """``<shared>/tensorboard`` (or the configured ``root``)."""
    return shared / root


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

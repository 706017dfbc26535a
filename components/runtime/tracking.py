"""MLflow runs of a sweep (DESIGN.md, "Tracking"): one parent run per sweep, one child run per trial.

Runs are found again by tag on every attempt, never created twice: ``sweepyard.sweep_id`` +
``sweepyard.role=sweep`` for the parent, plus ``sweepyard.trial_id`` + ``sweepyard.role=trial`` for a
child. Processes racing to create the same run each create one, and the first to claim the run's
file on the shared disk (``mlflow_run_id`` in the sweep's or the trial's folder, created
atomically: a hard link that fails when the name exists) wins; the others delete theirs and use the
claimed one. MLflow alone cannot settle it: a run's start time is taken by the client before its
request, so racers that search at different moments can each see a different "oldest" run. Without
a shared disk (``SWEEPYARD_SHARED`` unset) the oldest run found is kept, best effort. ``plan``,
``train`` and ``compare`` all go through :func:`ensure_sweep_run`, so whoever comes first creates
the parent. The finding and claiming is :mod:`components.runtime.run_claims`'s.

The trial side (metrics batched in the background, exactly once across preemptions) is in
:mod:`components.runtime.sender` and :mod:`components.runtime.logger`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.links import TAG_ROLE, TAG_SWEEP, TAG_TRIAL
from components.links import sweep_runs_url as sweep_runs_url  # re-exported for the components
from components.runtime.mlflow_rest import (
    HTTP_TIMEOUT_SECONDS,
    MLFLOW_ONLY_ENV,
    Metric,
    Param,
    RestClient,
    RunTag,
)
from components.runtime.run_claims import claim_file, claimed_run, find_runs, open_run

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

TAG_PARENT = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "sweepyard"
# MLflow 3's UI opens an experiment by its kind: without this tag it guesses "GenAI" (traces) and a
# training user must find the "Model training" switch first. The values are the UI's own
# (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT); the description is the note tag.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
KIND_MODEL_TRAINING = "custom_model_development"
TAG_DESCRIPTION = "mlflow.note.content"
# The sweep's end, as MLflow's run statuses spell it (from Argo's {{workflow.status}}).
RUN_STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Error": "FAILED"}
# A dead or refusing server must not block a trial for minutes (MLflow's defaults: 7 retries with
# exponential backoff, 120 s timeout). The harness's own sender retries forever in the background.
HTTP_MAX_RETRIES = 0


def configure_http(env: dict[str, str] | None = None) -> None:
    """Lower MLflow's HTTP retries and timeout (in ``os.environ`` unless ``env`` is given)."""
    target = os.environ if env is None else env
    for name, cap in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_MAX_RETRIES),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_SECONDS),
    ):
        try:
            current = int(target.get(name, ""))
        except ValueError:
            current = cap + 1
        target[name] = str(min(current, cap))


def tracking_uri(env: Mapping[str, str] | None = None) -> str | None:
    """``MLFLOW_TRACKING_URI``, or None when tracking is off (unset or empty)."""
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI", "").strip() or None


def experiment_name(experiment: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The experiment: the given one, else ``MLFLOW_EXPERIMENT_NAME``, else ``SWEEPYARD_PIPELINE``."""
    env = os.environ if env is None else env
    for value in (
        experiment,
        env.get("MLFLOW_EXPERIMENT_NAME"),
        env.get("SWEEPYARD_PIPELINE"),
    ):
        if value and value.strip():
            return value.strip()
    return DEFAULT_EXPERIMENT


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient for ``uri`` (default: ``MLFLOW_TRACKING_URI``).

    The trainer lowers MLflow's HTTP retries first (:func:`configure_http`); other callers keep
    MLflow's patient defaults.
    """
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    if uri is None:
        raise RuntimeError("MLFLOW_TRACKING_URI is not set: tracking is off")
    return MlflowClient(tracking_uri=uri)


# --------------------------------------------------------------------------- the trial's client


# MLflow client settings the REST client below does not implement: with any of them set, a trial
# uses MlflowClient (and pays its import).
def trial_client(uri: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    """The client a trial tracks with: :class:`RestClient` for an ``http(s)://`` server, else (a
    file or database store, Databricks, TLS or auth settings it does not implement) MlflowClient."""
    env = os.environ if env is None else env
    uri = uri or tracking_uri(env)
    if uri is None:
        raise RuntimeError("MLFLOW_TRACKING_URI is not set: tracking is off")
    if uri.startswith(("http://", "https://")) and not any(
        env.get(name, "").strip() for name in MLFLOW_ONLY_ENV
    ):
        return RestClient(uri, env)
    return client(uri)


def log_batch(
    mlflow_client: Any,
    run_id: str,
    *,
    metrics: Iterable[tuple[str, float, int, int]] = (),
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Metrics ``(key, value, timestamp ms, step)``, params and tags of a run in one batch, with
    either client."""
    batch: dict[str, list[Any]] = {
        "metrics": [Metric(*m) for m in metrics],
        "params": [Param(k, str(v)) for k, v in (params or {}).items()],
        "tags": [RunTag(k, str(v)) for k, v in (tags or {}).items()],
    }
    if type(mlflow_client).__module__.startswith("mlflow."):  # MlflowClient: its own entities
        from mlflow import entities

        kinds = {"metrics": entities.Metric, "params": entities.Param, "tags": entities.RunTag}
        batch = {kind: [kinds[kind](*item) for item in items] for kind, items in batch.items()}
    given = {kind: items for kind, items in batch.items() if items}  # (only the kinds it has)
    mlflow_client.log_batch(run_id, **given, synchronous=True)


def latest_steps(run: Any) -> dict[str, int]:
    """The last step logged of each metric of a run as either client returns it."""
    steps = getattr(run.data, "latest_steps", None)
    if steps is not None:
        return dict(steps)
    # MlflowClient's RunData has no steps in public; its protobuf form has each latest metric's step
    return {m.key: int(m.step) for m in run.data.to_proto().metrics}


def git_commit(env: Mapping[str, str] | None = None) -> str:
    """``SWEEPYARD_GIT_COMMIT``, else ``git rev-parse HEAD`` of this checkout, else ``unknown``."""
    env = os.environ if env is None else env
    value = env.get("SWEEPYARD_GIT_COMMIT", "").strip()
    if value:
        return value
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def experiment_tags(name: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Marks the experiment as model training, with a description naming the pipeline."""
    env = os.environ if env is None else env
    pipeline = env.get("SWEEPYARD_PIPELINE", "").strip() or name
    return {
        TAG_EXPERIMENT_KIND: KIND_MODEL_TRAINING,
        TAG_DESCRIPTION: (
            f"Hyperparameter sweeps of the sweepyard pipeline `{pipeline}` "
            f"(pipelines/{pipeline}.yaml): one parent run per sweep (tag `{TAG_SWEEP}`), "
            "one child run per trial."
        ),
    }


def get_or_create_experiment(mlflow_client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing (a concurrent creator is tolerated).

    Created or found, it carries :func:`experiment_tags` (set once, when missing).
    """
    tags = experiment_tags(name)
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(mlflow_client.create_experiment(name, tags=tags))
        except Exception:  # (MlflowException, RestError) a concurrent creator, maybe
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    have = dict(found.tags or {})
    for key, value in tags.items():
        if key not in have or (key == TAG_EXPERIMENT_KIND and have[key] != value):
            mlflow_client.set_experiment_tag(found.experiment_id, key, value)
    return str(found.experiment_id)


def finish_sweep_run(
    sweep_id: str,
    workflow_status: str,
    *,
    experiment: str | None = None,
    mlflow_client: MlflowClient | None = None,
) -> tuple[str, str]:
    """End the sweep's parent run: FINISHED when the workflow succeeded, else FAILED.

    Called by the exit handler (notify), which runs whatever step ended the sweep. Returns
    ``(run id, MLflow status)``; the run is created first when no step got to create it.
    """
    c = mlflow_client or client()
    status = RUN_STATUS.get(workflow_status, "FAILED")
    run_id = ensure_sweep_run(sweep_id, experiment=experiment, mlflow_client=c)
    c.set_terminated(run_id, status=status)
    return run_id, status


def _ensure_run(
    mlflow_client: MlflowClient,
    experiment_id: str,
    identity: Mapping[str, str],
    tags: Mapping[str, str],
    run_name: str,
    start_time: float | None = None,
) -> str:
    return str(
        open_run(mlflow_client, experiment_id, identity, tags, run_name, start_time)[0].info.run_id
    )


def ensure_sweep_run(
    sweep_id: str,
    *,
    experiment: str | None = None,
    tags: dict[str, str] | None = None,
    mlflow_client: MlflowClient | None = None,
) -> str:
    """The run id of the sweep's parent run, created if missing.

    Args:
        sweep_id: the sweep.
        experiment: the experiment name (default: :func:`experiment_name`).
        tags: extra tags set when the run is created (never secrets).
        mlflow_client: a client to reuse (default: one for ``MLFLOW_TRACKING_URI``).
    """
    c = mlflow_client or client()
    exp = get_or_create_experiment(c, experiment_name(experiment))
    identity = {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"}
    return _ensure_run(c, exp, identity, dict(tags or {}), run_name=sweep_id)


def find_trial_run(
    sweep_id: str,
    trial_id: str,
    *,
    experiment: str | None = None,
    mlflow_client: MlflowClient | None = None,
) -> str | None:
    """The run id of a trial's child run, or None when it has none yet."""
    c = mlflow_client or client()
    found = c.get_experiment_by_name(experiment_name(experiment))
    if found is None:
        return None
    identity = {TAG_SWEEP: sweep_id, TAG_TRIAL: trial_id, TAG_ROLE: "trial"}
    runs = find_runs(c, str(found.experiment_id), identity)
    return str(runs[0].info.run_id) if runs else None


def ensure_trial_run(
    sweep_id: str,
    trial_id: str,
    *,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    mlflow_client: MlflowClient | None = None,
    start_time: float | None = None,
    run_name: str | None = None,
) -> str:
    """The run id of a trial's child run under the sweep's parent, created if missing.

    ``start_time`` (epoch seconds): when the trial's first attempt started, so the run spans
    every attempt (it ends when the last one sets its final status), not the one that created it.
    ``run_name``: what the runs page shows (default: the trial id).
    """
    c = mlflow_client or client()
    exp = get_or_create_experiment(c, experiment_name(experiment))
    parent = _ensure_run(c, exp, {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"}, {}, run_name=sweep_id)
    identity = {TAG_SWEEP: sweep_id, TAG_TRIAL: trial_id, TAG_ROLE: "trial"}
    return _ensure_run(
        c, exp, identity, {TAG_PARENT: parent, **dict(tags or {})}, run_name or trial_id, start_time
    )


def open_trial_run(
    sweep_id: str,
    trial_id: str,
    *,
    mlflow_client: Any,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    start_time: float | None = None,
    run_name: str | None = None,
) -> tuple[Any, bool]:
    """:func:`ensure_trial_run` in as few requests as it takes: ``(run, created)``, the run with
    its params, tags and latest metric steps (:func:`latest_steps`).

    A retry finds its run claimed on the shared disk: one request (the run itself), with no
    lookup of the experiment or the parent. The first attempt looks the experiment and the parent
    up (or creates them) and creates its run with ``tags``.
    """
    identity = {TAG_SWEEP: sweep_id, TAG_TRIAL: trial_id, TAG_ROLE: "trial"}
    claimed = claimed_run(mlflow_client, claim_file(identity))
    if claimed is not None:
        return claimed, False
    exp = get_or_create_experiment(mlflow_client, experiment_name(experiment))
    parent = _ensure_run(
        mlflow_client, exp, {TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"}, {}, run_name=sweep_id
    )
    return open_run(
        mlflow_client,
        exp,
        identity,
        {TAG_PARENT: parent, **dict(tags or {})},
        run_name or trial_id,
        start_time,
    )


def logged_steps(mlflow_client: Any, run_id: str) -> dict[str, int]:
    """The last step logged for each metric of a run (one request: the run's latest metrics)."""
    return latest_steps(mlflow_client.get_run(run_id))


def run_params(mlflow_client: MlflowClient, run_id: str) -> dict[str, str]:
    return dict(mlflow_client.get_run(run_id).data.params)


def set_trial_tag(sweep_id: str, trial_id: str, key: str, value: str) -> None:
    """Set one tag on a trial's run when tracking is on and the run exists (errors are logged)."""
    if tracking_uri() is None:
        return
    configure_http()
    try:
        c = client()
        run_id = find_trial_run(sweep_id, trial_id, mlflow_client=c)
        if run_id:
            c.set_tag(run_id, key, value)
    except Exception as exc:  # MLflow down: the shared disk's record stays the truth
        log.warning("could not tag trial %s's run: %s: %s", trial_id, type(exc).__name__, exc)

"""One attempt of a trial, start to exit code: the part of the trainer that is not training.

:func:`run_trial` skips a finished trial, records the attempt in ``attempts.jsonl``, opens the
:class:`~components.runtime.harness.Harness` (MLflow run found again by tag, params once, tags for
data hash, image, git commit, attempt and preemptions), calls the training function, and maps what
happens to an exit code and ``result.json`` (DESIGN.md, "Exit codes of a trial").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.contract import (
    EXIT_DONE,
    EXIT_GIVE_UP,
    EXIT_PREEMPTED,
    trial_dir,
)
from components.contract import EXIT_RETRY as EXIT_APP_ERROR
from components.runtime import tracking
from components.runtime.harness import Harness
from components.runtime.sender import set_run_status
from components.runtime.trial import (
    AttemptLog,
    GiveUp,
    Preempted,
    StopSignal,
    now_iso,
    read_result,
    record_retry_of_done,
    shared_root,
    tensorboard_dir,
    write_json_atomic,
)

log = logging.getLogger("components.train")
METRICS = ("val_loss", "val_accuracy", "train_loss")


@dataclass
class TrialSpec:
    """One trial, as the CLI describes it."""

    sweep_id: str
    trial_id: str
    params: dict[str, Any]
    data: Path
    data_hash: str
    objective: str = "val_loss"
    direction: str = "minimize"
    checkpoint_interval: float = 60.0
    keep_checkpoints: int = 3
    max_app_errors: int = 3
    flush_timeout: float = 30.0
    device: str = "auto"
    threads: int = 1


TrainFn = Callable[[TrialSpec, Harness, AttemptLog], tuple[int, dict[str, float]]]
ValidateFn = Callable[[dict[str, Any]], Any]


def _connect(spec: TrialSpec, attempt: AttemptLog) -> Any:
    uri = tracking.tracking_uri()
    if uri is None:
        log.warning("MLFLOW_TRACKING_URI is not set: metrics go to TensorBoard only")
        return None
    env = os.environ
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

    def connect() -> Any:
        from mlflow.entities import Param, RunTag

        client = tracking.client(uri)
        first = attempt.history.first_start or attempt.started  # the run spans every attempt
        run_id = tracking.ensure_trial_run(
            spec.sweep_id, spec.trial_id, mlflow_client=client, start_time=first
        )
        if not tracking.run_params(client, run_id):
            params = [Param(k, str(v)) for k, v in sorted(spec.params.items())]
            client.log_batch(run_id, params=params, synchronous=True)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
        client.update_run(run_id, status="RUNNING")
        return client, run_id

    return connect


def run_trial(spec: TrialSpec, stop: StopSignal, train: TrainFn, validate: ValidateFn) -> int:
    """Run one attempt of a trial; returns its exit code and writes ``result.json`` when it ends.

    Args:
        spec: the trial.
        stop: the installed SIGTERM flag.
        train: runs (or resumes) the training, returns ``(step, final metrics)``; raises
            :class:`Preempted` or :class:`GiveUp`; any other exception is an application error.
        validate: checks the params before anything is loaded (raises :class:`GiveUp`).
    """
    shared = shared_root()
    tdir = trial_dir(shared, spec.sweep_id, spec.trial_id)
    result_path = tdir / "result.json"
    previous = read_result(result_path)
    if previous is not None and previous.get("status") == "done":
        log.info("trial %s is already done: nothing to train", spec.trial_id)
        if (count := record_retry_of_done(tdir)) is not None:  # killed after it finished
            tracking.set_trial_tag(
                spec.sweep_id, spec.trial_id, "sweepyard.preemptions", str(count)
            )
        _deliver_leftovers(spec, tdir)
        return EXIT_DONE
    tdir.mkdir(parents=True, exist_ok=True)
    attempt = AttemptLog(tdir / "attempts.jsonl")
    attempt.start()
    tracking.configure_http()
    harness: Harness | None = None
    app_errors = attempt.history.app_errors
    step, status, error, code = 0, "failed", None, EXIT_GIVE_UP
    metrics: dict[str, float] = {}
    try:
        if attempt.history.app_errors >= spec.max_app_errors:
            raise GiveUp(f"{attempt.history.app_errors} application errors already: budget spent")
        validate(spec.params)
        harness = Harness(
            tdir,
            tb_dir=tensorboard_dir(shared, spec.sweep_id, spec.trial_id),
            connect=_connect(spec, attempt),
            keep=spec.keep_checkpoints,
            direction=spec.direction,
            checkpoint_interval=spec.checkpoint_interval,
            stop=stop,
        )
        step, metrics = train(spec, harness, attempt)
        status, code = "done", EXIT_DONE
    except Preempted as exc:
        log.warning("%s", exc)
        left = harness.close(max(0.5, stop.remaining() - 1.5)) if harness else 0
        set_run_status(harness.sender if harness else None, "KILLED")
        attempt.end("preempted", EXIT_PREEMPTED, str(exc))
        log.info("exit 143 (%d metric points spooled)", left)
        return EXIT_PREEMPTED
    except GiveUp as exc:
        error, code = str(exc), EXIT_GIVE_UP
        log.error("giving up: %s", error)
    except Exception as exc:
        _report(exc)
        count = app_errors = attempt.history.app_errors + 1
        error = f"{type(exc).__name__}: {exc}"
        log.exception("application error %d of %d", count, spec.max_app_errors)
        if count < spec.max_app_errors:
            if harness:
                harness.close(min(spec.flush_timeout, 10.0))
            attempt.end("app_error", EXIT_APP_ERROR, error)
            return EXIT_APP_ERROR
        error = f"{count} application errors, the last: {error}"
        attempt.end("app_error", EXIT_GIVE_UP, error)
    left = harness.close(spec.flush_timeout) if harness else 0
    sender = harness.sender if harness else None
    set_run_status(sender, "FINISHED" if status == "done" else "FAILED")
    history = attempt.history
    write_json_atomic(
        result_path,
        {
            "sweep_id": spec.sweep_id,
            "trial_id": spec.trial_id,
            "params": spec.params,
            "status": status,
            "error": error,
            "step": step,
            "metrics": {k: metrics.get(k) for k in METRICS},
            "objective": {
                "metric": spec.objective,
                "direction": spec.direction,
                "value": metrics.get(spec.objective),
            },
            "run_id": sender.run_id if sender else None,
            "data_hash": spec.data_hash,
            "attempts": attempt.number,
            "preemptions": history.preemptions,
            "app_errors": app_errors,
            "metric_points_pending": left,
            "wall_seconds": round(time.time() - (history.first_start or attempt.started), 3),
            "image": os.environ.get("SWEEPYARD_IMAGE", ""),
            "finished_at": now_iso(),
        },
    )
    attempt.end("done" if status == "done" else "gave_up", code, error, step=step)
    return code


def _deliver_leftovers(spec: TrialSpec, tdir: Path) -> None:
    from components.runtime.harness import SPOOL
    from components.runtime.sender import deliver_spool

    spool = tdir / SPOOL
    if spool.exists():
        connect = _connect(spec, AttemptLog(tdir / "attempts.jsonl"))
        if connect is not None:
            tracking.configure_http()
            left = deliver_spool(spool, connect, spec.flush_timeout)
            log.info("spooled metric points: %d still undelivered", left)


def _report(exc: BaseException) -> None:
    if os.environ.get("SENTRY_DSN", "").strip():
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
        sentry_sdk.flush(timeout=5)

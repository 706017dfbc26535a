"""One attempt of a trial, start to exit code: the part of the trainer that is not training.

:func:`run_trial` skips a finished trial, records the attempt in ``attempts.jsonl``, opens the
:class:`~components.runtime.harness.Harness` (MLflow run found again by tag, params once, tags for
data hash, image, git commit, attempt and preemptions), calls the training function, and maps what
happens to an exit code and ``result.json`` (DESIGN.md, "Exit codes of a trial").

Under torchrun (a distributed trial, :mod:`components.runtime.distributed`) every rank runs it:
rank 0 as above, and it tells the other ranks whether and as which attempt to train; they train
with tracking off and leave a rank record when they fail. A collective that fails on rank 0 because
a peer is gone ends the attempt preempted (exit 143), unless the peer left a record of its own
application error or give-up, which then counts as this attempt's.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.budget import SKIPPED, Budget, spent
from components.contract import (
    EXIT_DONE,
    EXIT_GIVE_UP,
    EXIT_PREEMPTED,
    SPOOL_FILE,
    trial_dir,
)
from components.contract import EXIT_RETRY as EXIT_APP_ERROR
from components.runtime import distributed, tracking
from components.runtime.distributed import Dist
from components.runtime.harness import Harness
from components.runtime.pruning import Pruned, Pruner, from_spec
from components.runtime.rank_run import Gate, device_type, run_rank
from components.runtime.sender import MetricSender, set_run_status
from components.runtime.spans import SPANS, format_spans
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
from components.runtime.trial_connect import connect_run

log = logging.getLogger("components.train")


@dataclass
class TrialSpec:
    """One trial, as the CLI describes it."""

    sweep_id: str
    trial_id: str
    params: dict[str, Any]
    data: Path | None  # None: the sweep has no data
    data_hash: str
    objective: str = "val_loss"
    direction: str = "minimize"
    checkpoint_interval: float = 60.0
    keep_checkpoints: int = 3
    max_app_errors: int = 3
    flush_timeout: float = 30.0
    device: str = "auto"
    threads: int = 1
    pruner: dict[str, Any] | None = None
    checkpoint_dir: str = "checkpoints"  # the harness's, inside the trial folder
    budget: Budget | None = None  # the sweep's: no new trial starts once it is spent
    topology: Any = None  # a command's torchrun (components.runtime.distributed.Topology)


TrainFn = Callable[[TrialSpec, Harness, AttemptLog], tuple[int, dict[str, float]]]
ValidateFn = Callable[[dict[str, Any]], Any]


def run_trial(spec: TrialSpec, stop: StopSignal, train: TrainFn, validate: ValidateFn) -> int:
    """Run one attempt of a trial; returns its exit code and writes ``result.json`` when it ends.

    Args:
        spec: the trial.
        stop: the installed SIGTERM flag.
        train: runs (or resumes) the training, returns ``(step, final metrics)``; raises
            :class:`Preempted`, :class:`Pruned` or :class:`GiveUp`; any other exception is an
            application error.
        validate: checks the params before anything is loaded (raises :class:`GiveUp`).
    """
    dist = Dist.from_env()
    if not dist.enabled:
        return _run_trial(spec, stop, train, validate, dist, Gate(dist))
    dist.init(device_type(spec.device))
    try:
        if dist.is_main:
            gate = Gate(dist)
            try:
                return _run_trial(spec, stop, train, validate, dist, gate)
            finally:
                gate.close()
        return run_rank(spec, stop, train, dist)
    finally:
        dist.destroy()


def _run_trial(
    spec: TrialSpec,
    stop: StopSignal,
    train: TrainFn,
    validate: ValidateFn,
    dist: Dist,
    gate: Gate,
) -> int:
    entered = time.monotonic()
    if SPANS.get("imports") is None:  # the process's start until now: Python, torch, the harness
        SPANS.add("imports", entered - SPANS.origin)
    shared = shared_root()
    tdir = trial_dir(shared, spec.sweep_id, spec.trial_id)
    result_path = tdir / "result.json"
    previous = read_result(result_path)
    if previous is not None and previous.get("status") in ("done", "pruned"):
        log.info("trial %s is already %s: nothing to train", spec.trial_id, previous["status"])
        if (count := record_retry_of_done(tdir)) is not None:  # killed after it finished
            tracking.set_trial_tag(
                spec.sweep_id, spec.trial_id, "sweepyard.preemptions", str(count)
            )
        _deliver_leftovers(spec, tdir)
        return EXIT_DONE
    if spec.budget is not None and not (tdir / "attempts.jsonl").exists():
        why = spent(shared, spec.sweep_id, spec.budget)  # (a started trial always finishes)
        if why is not None:
            log.warning("trial %s not started: %s", spec.trial_id, why)
            _skip(spec, tdir, why)
            return EXIT_DONE
    tdir.mkdir(parents=True, exist_ok=True)
    attempt = AttemptLog(tdir / "attempts.jsonl")
    attempt.start()
    tracking.configure_http()
    harness: Harness | None = None
    end = _End(app_errors=attempt.history.app_errors)
    try:
        if attempt.history.app_errors >= spec.max_app_errors:
            raise GiveUp(f"{attempt.history.app_errors} application errors already: budget spent")
        validate(spec.params)
        pruner = _pruner(spec)
        at = pruner.pruned_at() if pruner is not None else None
        if at is not None and dist.enabled:
            raise Pruned(at)  # (before the other ranks start)
        gate.open(attempt.number)
        harness = Harness(
            tdir,
            tb_dir=tensorboard_dir(shared, spec.sweep_id, spec.trial_id),
            connect=connect_run(spec, attempt),
            keep=spec.keep_checkpoints,
            direction=spec.direction,
            checkpoint_interval=spec.checkpoint_interval,
            stop=stop,
            pruner=pruner,
            checkpoint_dir=tdir / spec.checkpoint_dir,
            dist=dist,
            attempt=attempt.number,
        )
        if at is not None:
            raise Pruned(at)
        harness.trainer_started = SPANS.since("setup", entered)
        end.step, end.metrics = train(spec, harness, attempt)
        if spec.objective not in end.metrics:
            raise GiveUp(
                f"the trainer finished without reporting the objective metric {spec.objective!r}"
                f" (it reported: {', '.join(sorted(end.metrics)) or 'nothing'})"
            )
        if not math.isfinite(end.metrics[spec.objective]):
            raise GiveUp(f"the objective {spec.objective!r} is {end.metrics[spec.objective]}")
        end.status, end.code = "done", EXIT_DONE
    except Preempted as exc:
        log.warning("%s", exc)
        left = harness.close(max(0.5, stop.remaining() - 1.5)) if harness else 0
        set_run_status(harness.sender if harness else None, "KILLED")
        _end(attempt, "preempted", EXIT_PREEMPTED, str(exc))
        log.info("exit 143 (%d metric points spooled)", left)
        return EXIT_PREEMPTED
    except Pruned as exc:
        log.info("%s: the trial ends here", exc)
        end.status, end.code, end.pruned_at = "pruned", EXIT_DONE, exc.step
        end.step = exc.step
        end.metrics = harness.last_metrics() if harness else {}
    except GiveUp as exc:
        end.error, end.code = str(exc), EXIT_GIVE_UP
        log.error("giving up: %s", end.error)
    except Exception as exc:
        if dist.enabled and distributed.is_comm_error(exc):
            if harness is not None:
                harness.peer_lost = True  # no wait for a checkpoint: its collectives may hang
            peer = distributed.wait_for_peers(tdir, attempt.number, dist.rank, stop)
            if peer is None:  # a lost rank or node: a disruption, not the trainer's error
                log.warning("a peer rank is gone: %s", exc)
                if harness is not None:
                    harness.close(max(0.5, stop.remaining() - 1.5))
                set_run_status(harness.sender if harness else None, "KILLED")
                _end(attempt, "preempted", EXIT_PREEMPTED, f"a peer rank or node was lost: {exc}")
                return EXIT_PREEMPTED
            error = f"rank {peer.get('rank')}: {peer.get('error')}"
            if peer.get("code") == EXIT_GIVE_UP:
                end.error, end.code = error, EXIT_GIVE_UP
                log.error("giving up: %s", end.error)
                return _finish(spec, tdir, attempt, harness, end)
            exc = RuntimeError(error)
        code = _app_error(exc, spec, attempt, harness, end)
        if code is not None:
            return code
    return _finish(spec, tdir, attempt, harness, end)


@dataclass
class _End:
    """How an attempt ended (what ``result.json`` records)."""

    app_errors: int
    step: int = 0
    status: str = "failed"
    error: str | None = None
    code: int = EXIT_GIVE_UP
    pruned_at: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _pruner(spec: TrialSpec) -> Pruner | None:
    try:
        steps = spec.params.get("steps")
        final = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
        return from_spec(
            spec.pruner, trial_id=spec.trial_id, sweep_id=spec.sweep_id, final_step=final
        )
    except ValueError as exc:
        raise GiveUp(str(exc)) from exc


def _app_error(
    exc: Exception, spec: TrialSpec, attempt: AttemptLog, harness: Harness | None, end: _End
) -> int | None:
    """Count an application error: exit 1 (retried) while the budget lasts, else None (give up)."""
    _report(exc)
    count = end.app_errors = attempt.history.app_errors + 1
    error = f"{type(exc).__name__}: {exc}"
    log.exception("application error %d of %d", count, spec.max_app_errors)
    if count < spec.max_app_errors:
        if harness:
            harness.close(min(spec.flush_timeout, 10.0))
        _end(attempt, "app_error", EXIT_APP_ERROR, error)
        return EXIT_APP_ERROR
    end.error = f"{count} application errors, the last: {error}"
    _end(attempt, "app_error", EXIT_GIVE_UP, end.error)
    return None


def _finish(
    spec: TrialSpec, tdir: Path, attempt: AttemptLog, harness: Harness | None, end: _End
) -> int:
    """Flush tracking, end the MLflow run, write ``result.json`` and the attempt's end record."""
    started = time.monotonic()
    left = harness.close(spec.flush_timeout) if harness else 0
    started = SPANS.since("flush", started)
    sender = harness.sender if harness else None
    lost_steps = attempt.history.lost_steps + attempt.redo.steps
    lost_seconds = round(attempt.history.lost_seconds + attempt.redo.seconds(time.time()), 3)
    tags = {"sweepyard.status": "pruned", "sweepyard.pruned_at_step": str(end.step)}
    tags = tags if end.status == "pruned" else {}
    if lost_steps:
        tags.update(
            {"sweepyard.lost_steps": str(lost_steps), "sweepyard.lost_seconds": str(lost_seconds)}
        )
    _tag_run(sender, tags)
    status = {"done": "FINISHED", "pruned": "KILLED"}.get(end.status, "FAILED")
    set_run_status(sender, status)
    history = attempt.history
    doc: dict[str, Any] = {
        "sweep_id": spec.sweep_id,
        "trial_id": spec.trial_id,
        "params": spec.params,
        "status": end.status,
        "error": end.error,
        "step": end.step,
        "metrics": dict(sorted(end.metrics.items())),
        "objective": {
            "metric": spec.objective,
            "direction": spec.direction,
            "value": end.metrics.get(spec.objective),
        },
        "run_id": sender.run_id if sender else None,
        "data_hash": spec.data_hash,
        "attempts": attempt.number,
        "preemptions": history.preemptions,
        "app_errors": end.app_errors,
        "lost_steps": lost_steps,
        "lost_seconds": lost_seconds,
        "metric_points_pending": left,
        "wall_seconds": round(time.time() - (history.first_start or attempt.started), 3),
        "image": os.environ.get("SWEEPYARD_IMAGE", ""),
        "finished_at": now_iso(),
    }
    if end.status == "pruned":
        doc["pruned_at_step"] = end.pruned_at
    if end.status in ("done", "pruned"):
        doc["steps_run"] = end.step  # the last step reached (compute saved by pruning)
    write_json_atomic(tdir / "result.json", doc)
    outcome = {"done": "done", "pruned": "pruned"}.get(end.status, "gave_up")
    SPANS.since("end", started)
    _end(attempt, outcome, end.code, end.error, step=end.step, harness=harness)
    return end.code


def _end(
    attempt: AttemptLog,
    outcome: str,
    code: int,
    error: str | None,
    step: int | None = None,
    harness: Harness | None = None,
) -> None:
    """The attempt's end record, with its spans (also logged in one line)."""
    last = harness.last_step_at if harness is not None else None
    if last is not None and SPANS.get("exit") is None:
        SPANS.add("exit", time.monotonic() - last)  # the last step until this record
    spans = SPANS.as_dict()
    if spans:
        log.info("spans: %s", format_spans(spans))
    attempt.end(outcome, code, error, step=step, spans=spans)


def _skip(spec: TrialSpec, tdir: Path, why: str) -> None:
    """``result.json`` of a trial that never started (status ``skipped``: neither run nor failed)."""
    doc = {
        "sweep_id": spec.sweep_id,
        "trial_id": spec.trial_id,
        "params": spec.params,
        "status": SKIPPED,
        "error": f"not started: {why}",
        "objective": {"metric": spec.objective, "direction": spec.direction, "value": None},
        "attempts": 0,
        "finished_at": now_iso(),
    }
    write_json_atomic(tdir / "result.json", doc)


def _tag_run(sender: MetricSender | None, tags: dict[str, str]) -> None:
    """Tag the trial's run at its end (pruned at a step, the work it redid)."""
    if not tags or sender is None:
        return
    try:
        sender.log_tags(tags)  # not connected: nothing to tag
    except Exception as exc:  # tracking never fails a trial
        log.warning("could not tag the run: %s", exc)


def _deliver_leftovers(spec: TrialSpec, tdir: Path) -> None:
    from components.runtime.sender import deliver_spool

    spool = tdir / SPOOL_FILE
    if spool.exists():
        connect = connect_run(spec, AttemptLog(tdir / "attempts.jsonl"))
        if connect is not None:
            tracking.configure_http()
            left = deliver_spool(spool, connect, spec.flush_timeout)
            log.info("spooled metric points: %d still undelivered", left)


def _report(exc: BaseException) -> None:
    if os.environ.get("SENTRY_DSN", "").strip():
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
        sentry_sdk.flush(timeout=5)

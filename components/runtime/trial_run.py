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
from pathlib import Path

from components.budget import spent
from components.contract import (
    EXIT_DONE,
    EXIT_GIVE_UP,
    EXIT_PREEMPTED,
    SharedRootError,
    attempts_file,
    result_file,
    shared_root,
    spool_file,
    trial_dir,
)
from components.contract import EXIT_RETRY as EXIT_APP_ERROR
from components.runtime import distributed, tracking
from components.runtime.distributed import Dist
from components.runtime.harness import Harness
from components.runtime.pruning import Pruned, Pruner, from_spec
from components.runtime.rank_run import Gate, device_type, run_rank
from components.runtime.sender import set_run_status
from components.runtime.spans import SPANS
from components.runtime.trial import (
    AttemptLog,
    GiveUp,
    Preempted,
    StopSignal,
    read_result,
    record_retry_of_done,
    tensorboard_dir,
)
from components.runtime.trial_connect import connect_run
from components.runtime.trial_end import End, end_attempt, finish, skip
from components.runtime.trial_spec import TrainFn, TrialSpec, ValidateFn

log = logging.getLogger("components.train")


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
    try:
        shared = shared_root()
    except SharedRootError as exc:
        raise GiveUp(str(exc)) from exc
    tdir = trial_dir(shared, spec.sweep_id, spec.trial_id)
    early = _exit_before_start(spec, shared, tdir)
    if early is not None:
        return early
    tdir.mkdir(parents=True, exist_ok=True)
    attempt = AttemptLog(attempts_file(tdir))
    attempt.start()
    tracking.configure_http()
    harness: Harness | None = None
    end = End(app_errors=attempt.history.app_errors)
    try:
        harness, at = _open_harness(spec, stop, validate, dist, gate, shared, attempt)
        if at is not None:
            raise Pruned(at)
        harness.trainer_started = SPANS.since("setup", entered)
        end.step, end.metrics = train(spec, harness, attempt)
        _check_objective(spec, end.metrics)
        end.status, end.code = "done", EXIT_DONE
    except Preempted as exc:
        log.warning("%s", exc)
        return _preempted(stop, attempt, harness, str(exc))
    except Pruned as exc:
        log.info("%s: the trial ends here", exc)
        end.status, end.code, end.pruned_at = "pruned", EXIT_DONE, exc.step
        end.step = exc.step
        end.metrics = harness.last_metrics() if harness else {}
    except GiveUp as exc:
        end.error, end.code = str(exc), EXIT_GIVE_UP
        log.error("giving up: %s", end.error)
    except Exception as exc:
        code = _failed(exc, spec, stop, dist, tdir, attempt, harness, end)
        if code is not None:
            return code
    return finish(spec, tdir, attempt, harness, end)


def _exit_before_start(spec: TrialSpec, shared: Path, tdir: Path) -> int | None:
    """The exit code of a trial that does not train (done already, or the budget is spent)."""
    previous = read_result(result_file(tdir))
    if previous is not None and previous.get("status") in ("done", "pruned"):
        log.info("trial %s is already %s: nothing to train", spec.trial_id, previous["status"])
        if (count := record_retry_of_done(tdir)) is not None:  # killed after it finished
            tracking.set_trial_tag(
                spec.sweep_id, spec.trial_id, "sweepyard.preemptions", str(count)
            )
        _deliver_leftovers(spec, tdir)
        return EXIT_DONE
    if spec.budget is not None and not attempts_file(tdir).exists():
        why = spent(shared, spec.sweep_id, spec.budget)  # (a started trial always finishes)
        if why is not None:
            log.warning("trial %s not started: %s", spec.trial_id, why)
            skip(spec, tdir, why)
            return EXIT_DONE
    return None


def _open_harness(
    spec: TrialSpec,
    stop: StopSignal,
    validate: ValidateFn,
    dist: Dist,
    gate: Gate,
    shared: Path,
    attempt: AttemptLog,
) -> tuple[Harness, int | None]:
    """Check the params and the budget, open the harness; with the step the trial was pruned at
    already (None: it trains)."""
    if attempt.history.app_errors >= spec.max_app_errors:
        raise GiveUp(f"{attempt.history.app_errors} application errors already: budget spent")
    validate(spec.params)
    pruner = _pruner(spec)
    at = pruner.pruned_at() if pruner is not None else None
    if at is not None and dist.enabled:
        raise Pruned(at)  # (before the other ranks start)
    gate.open(attempt.number)
    tdir = trial_dir(shared, spec.sweep_id, spec.trial_id)
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
    return harness, at


def _check_objective(spec: TrialSpec, metrics: dict[str, float]) -> None:
    """Raise :class:`GiveUp` when the trainer's final metrics lack a finite objective."""
    if spec.objective not in metrics:
        raise GiveUp(
            f"the trainer finished without reporting the objective metric {spec.objective!r}"
            f" (it reported: {', '.join(sorted(metrics)) or 'nothing'})"
        )
    if not math.isfinite(metrics[spec.objective]):
        raise GiveUp(f"the objective {spec.objective!r} is {metrics[spec.objective]}")


def _preempted(stop: StopSignal, attempt: AttemptLog, harness: Harness | None, error: str) -> int:
    """End a preempted attempt (SIGTERM, or a lost peer): flush what fits, exit 143."""
    left = harness.close(max(0.5, stop.remaining() - 1.5)) if harness else 0
    set_run_status(harness.sender if harness else None, "KILLED")
    end_attempt(attempt, "preempted", EXIT_PREEMPTED, error)
    log.info("exit 143 (%d metric points spooled)", left)
    return EXIT_PREEMPTED


def _failed(
    exc: Exception,
    spec: TrialSpec,
    stop: StopSignal,
    dist: Dist,
    tdir: Path,
    attempt: AttemptLog,
    harness: Harness | None,
    end: End,
) -> int | None:
    """The exit code of an attempt the trainer raised ``exc`` in (None: give up and finish).

    Under torchrun a failed collective is a lost peer (preempted) unless the peer left a record
    of its own error, which then counts as this attempt's.
    """
    if dist.enabled and distributed.is_comm_error(exc):
        if harness is not None:
            harness.peer_lost = True  # no wait for a checkpoint: its collectives may hang
        peer = distributed.wait_for_peers(tdir, attempt.number, dist.rank, stop)
        if peer is None:  # a lost rank or node: a disruption, not the trainer's error
            log.warning("a peer rank is gone: %s", exc)
            return _preempted(stop, attempt, harness, f"a peer rank or node was lost: {exc}")
        error = f"rank {peer.get('rank')}: {peer.get('error')}"
        if peer.get("code") == EXIT_GIVE_UP:
            end.error, end.code = error, EXIT_GIVE_UP
            log.error("giving up: %s", end.error)
            return finish(spec, tdir, attempt, harness, end)
        exc = RuntimeError(error)
    return _app_error(exc, spec, attempt, harness, end)


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
    exc: Exception, spec: TrialSpec, attempt: AttemptLog, harness: Harness | None, end: End
) -> int | None:
    """Count an application error: exit 1 (retried) while the budget lasts, else None (give up)."""
    _report(exc)
    count = end.app_errors = attempt.history.app_errors + 1
    error = f"{type(exc).__name__}: {exc}"
    log.exception("application error %d of %d", count, spec.max_app_errors)
    if count < spec.max_app_errors:
        if harness:
            harness.close(min(spec.flush_timeout, 10.0))
        end_attempt(attempt, "app_error", EXIT_APP_ERROR, error)
        return EXIT_APP_ERROR
    end.error = f"{count} application errors, the last: {error}"
    end_attempt(attempt, "app_error", EXIT_GIVE_UP, end.error)
    return None


def _deliver_leftovers(spec: TrialSpec, tdir: Path) -> None:
    from components.runtime.sender import deliver_spool

    spool = spool_file(tdir)
    if spool.exists():
        connect = connect_run(spec, AttemptLog(attempts_file(tdir)))
        if connect is not None:
            tracking.configure_http()
            left = deliver_spool(spool, connect, spec.flush_timeout)
            log.info("spooled metric points: %d still undelivered", left)


def _report(exc: BaseException) -> None:
    if os.environ.get("SENTRY_DSN", "").strip():
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
        sentry_sdk.flush(timeout=5)

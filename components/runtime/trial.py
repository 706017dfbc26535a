"""A trial's lifecycle on the shared disk: attempts, exit codes, SIGTERM, ``result.json``.

Exit codes (:mod:`components.contract`): ``0`` done · ``143`` preempted after SIGTERM · ``3`` give up (bad input, or
the trial's budget of application errors is spent) · ``1`` an application error (retried).

``attempts.jsonl`` gets one ``start`` record when an attempt begins and one ``end`` record when it
ends. An attempt killed with SIGKILL (or whose pod vanished) leaves a start without an end: the next
attempt counts it as a preemption. Application errors are ``end`` records with outcome
``app_error``; the attempt whose error brings the count to ``--max-app-errors`` gives up (exit 3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.attempts import read_attempts
from components.contract import (
    EXIT_DONE,
    TENSORBOARD_DIR,
    attempts_file,
    plan_file,
    result_file,
    tensorboard_root,
)
from components.fsio import atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 15.0
PROGRESS_SECONDS = 2.0  # how often a running attempt records the step it reached


class GiveUp(Exception):
    """Bad input or a spent budget: the trial fails for good (exit 3, never retried)."""


class Preempted(Exception):
    """SIGTERM arrived; the loop stopped at a step boundary (exit 143)."""


def tensorboard_dir(
    shared: Path, sweep_id: str, trial_id: str, env: Mapping[str, str] | None = None
) -> Path:
    """``<shared>/<tensorboard root>/<sweep>/<trial-id> <param>=<value> ...``: one TensorBoard run
    per trial, named so a person tells the trials apart (the params that vary across the plan)."""
    env = os.environ if env is None else env
    root = env.get("SWEEPYARD_TENSORBOARD_ROOT", "").strip() or TENSORBOARD_DIR
    return tensorboard_root(shared, root) / sweep_id / run_label(shared, sweep_id, trial_id)


def run_label(shared: Path, sweep_id: str, trial_id: str) -> str:
    """``<trial-id> lr=0.003 hidden=32``: the trial id and the params that vary in the plan.

    Stable for a trial (the plan does not change), so every attempt writes to the same folder; the
    bare trial id when the plan is unreadable or the trial is not in it.
    """
    try:
        plan = json.loads(plan_file(shared, sweep_id).read_text("utf-8"))
        trials = {
            e["id"]: json.loads(e["params"]) if isinstance(e["params"], str) else e["params"]
            for e in plan
        }
    except (OSError, ValueError, TypeError, KeyError):
        return trial_id
    params = trials.get(trial_id)
    if not isinstance(params, dict):
        return trial_id
    names = sorted({k for p in trials.values() if isinstance(p, dict) for k in p})
    varying = [n for n in names if len({json.dumps(p.get(n)) for p in trials.values()}) > 1]
    bits = [f"{n}={params[n]}" for n in varying if n in params]
    label = " ".join([trial_id, *bits]).replace("/", "_")
    return label[:200]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename (readers never see half)."""
    atomic_write_json(path, dict(doc))


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --------------------------------------------------------------------------- attempts.jsonl


class AttemptLog:
    """Appends this attempt's start and end records to ``attempts.jsonl``.

    The one record of a trial's preemptions: an attempt killed before it wrote its start record
    (while Python imported torch, say) is found from the retry number Argo and the local backend
    pass in ``SWEEPYARD_ATTEMPT`` (``{{retries}}``): retry 2 with one start on record for this
    workflow means one attempt was lost; so was one that ended done and was retried all the same
    (killed on its way out). The start record says so (``lost``) and each counts as a preemption.
    The summary, leaderboard, MLflow and the Slack digest all read these counts.
    """

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.path = path
        self.id = uuid.uuid4().hex[:12]
        self.retry = env.get("SWEEPYARD_ATTEMPT", "")
        self.workflow = env.get("SWEEPYARD_WORKFLOW_NAME", "")
        self.history = read_attempts(path)
        self.lost = 0
        if self.retry.isdigit():
            seen = self.history.starts_by_workflow.get(self.workflow, 0)
            self.lost = max(0, int(self.retry) - seen)
            # retried although it ended done: killed after its end record (exit 143 to Argo)
            if (
                int(self.retry)
                and self.history.last_outcome_by_workflow.get(self.workflow) == "done"
            ):
                self.lost += 1
        self.history.attempts += self.lost
        self.history.preemptions += self.lost
        self.started = time.time()
        self.ended = False
        self.redo = Redo(self.history.max_step, self.started)
        self._progress_written = 0.0

    @property
    def number(self) -> int:
        """This attempt's number, 1-based, counting every attempt on record."""
        return self.history.attempts + 1

    def _append(self, rec: dict[str, Any], sync: bool = True) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            if sync:
                os.fsync(f.fileno())

    def start(self) -> None:
        self._append(
            {
                "event": "start",
                "id": self.id,
                "attempt": self.number,
                "retry": self.retry,
                "workflow": self.workflow,
                "lost": self.lost,
                "time": self.started,
                "at": now_iso(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "previous_preemptions": self.history.preemptions,
            }
        )

    def progress(self, step: int) -> None:
        """This attempt reached ``step``: counts the work it redoes, and every
        ``PROGRESS_SECONDS`` leaves a record of it (an attempt killed with SIGKILL writes no end)."""
        self.redo.reached(step, time.time())
        if time.monotonic() - self._progress_written >= PROGRESS_SECONDS:
            self._progress_written = time.monotonic()
            now = time.time()
            record = {"event": "progress", "id": self.id, "time": now, **self.redo.record(now)}
            self._append(record, sync=False)  # (a killed process's writes still land)

    def end(
        self,
        outcome: str,
        exit_code: int,
        error: str | None = None,
        step: int | None = None,
        spans: Mapping[str, float | int] | None = None,
    ) -> None:
        """The end record (``spans``: where the attempt's seconds went, see
        :mod:`components.runtime.spans`; an optional field, left out when not given)."""
        if self.ended:
            return
        self.ended = True
        now = time.time()
        self._append(
            {
                **({"spans": dict(spans)} if spans else {}),
                "event": "end",
                "id": self.id,
                "attempt": self.number,
                "outcome": outcome,
                "exit_code": exit_code,
                "error": error,
                **self.redo.record(now),
                **({"step": step} if step is not None else {}),
                "time": now,
                "at": now_iso(),
                "seconds": round(now - self.started, 3),
            }
        )


class Redo:
    """The work an attempt redoes: the steps it runs again at or below the highest step an earlier
    attempt reached (a program that does not checkpoint, or a checkpoint older than the kill), and
    the seconds from the attempt's start until it got past that step again.

    Args:
        before: the highest step earlier attempts reached (0: none).
        started: when this attempt started (epoch seconds).
    """

    def __init__(self, before: int, started: float) -> None:
        self.before = before
        self.started = started
        self.first: int | None = None
        self.step = 0
        self.caught_up: float | None = None if before else started

    def reached(self, step: int, now: float) -> None:
        if self.first is None:
            self.first = step
            if step > self.before:
                self.caught_up = self.started  # resumed past it: nothing redone
        self.step = max(self.step, step)
        if self.caught_up is None and step >= self.before:
            self.caught_up = now

    @property
    def steps(self) -> int:
        """Steps run again: from the first step this attempt reached up to the earlier high."""
        if self.first is None or self.first > self.before:
            return 0
        return min(self.step, self.before) - self.first + 1

    def seconds(self, now: float) -> float:
        """Seconds spent redoing: from the start until past the earlier high (or ``now``)."""
        return (self.caught_up or now) - self.started if self.steps else 0.0

    def record(self, now: float) -> dict[str, Any]:
        """The fields of a ``progress`` or ``end`` record (nothing before the first step)."""
        if self.first is None:
            return {}
        return {
            "step": self.step,
            "first_step": self.first,
            "redone_steps": self.steps,
            "redone_seconds": round(self.seconds(now), 3),
        }


def record_retry_of_done(tdir: Path, env: Mapping[str, str] | None = None) -> int | None:
    """A retry found the trial done: count the kill of the attempt that finished it, if any.

    The finishing attempt of this workflow was killed after it wrote ``result.json`` (Argo saw
    exit 143 and retried): a start/end ``skipped`` pair records the lost attempt and
    ``result.json``'s ``preemptions`` follows. Returns the new count, or None when nothing changed
    (a resubmitted sweep skipping its finished trials).
    """
    attempt = AttemptLog(attempts_file(tdir), env)
    if not attempt.lost:
        return None
    attempt.start()
    attempt.end("skipped", EXIT_DONE)
    result = read_result(result_file(tdir)) or {}
    result["preemptions"] = attempt.history.preemptions
    result["attempts"] = attempt.number
    write_json_atomic(result_file(tdir), result)
    return attempt.history.preemptions


# --------------------------------------------------------------------------- SIGTERM


class StopSignal:
    """Turns SIGTERM (and SIGINT) into a flag the training loop checks at each step boundary.

    Args:
        grace: seconds between SIGTERM and SIGKILL (``SWEEPYARD_GRACE_SECONDS``, default 15).
    """

    def __init__(self, grace: float | None = None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        if grace is None:
            raw = env.get("SWEEPYARD_GRACE_SECONDS", "").strip()
            try:
                grace = float(raw) if raw else DEFAULT_GRACE_SECONDS
            except ValueError as exc:
                raise GiveUp(f"SWEEPYARD_GRACE_SECONDS={raw!r}: not a number") from exc
        self.grace = grace
        self.received_at: float | None = None
        self.signum: int | None = None

    def install(self) -> StopSignal:
        """Handle SIGTERM/SIGINT from now on; a stop the handler it replaces had received is
        taken over (a pod running several trials in turn: one per trial, none lost between)."""
        if threading.current_thread() is threading.main_thread():
            previous = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
            if isinstance(previous, StopSignal) and previous.requested and not self.requested:
                self.received_at, self.signum = previous.received_at, previous.signum
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received_at is None:
            self.received_at = time.monotonic()
            self.signum = signum
            # Logging from a signal handler can deadlock on the handler's lock; write directly.
            with contextlib.suppress(OSError):
                os.write(2, f"received signal {signum}: stopping at the next step\n".encode())

    def request(self) -> None:
        """Ask the loop to stop as if SIGTERM had arrived now (tests, chaos)."""
        self._handle(signal.SIGTERM, None)

    @property
    def requested(self) -> bool:
        return self.received_at is not None

    def remaining(self) -> float:
        """Seconds left of the grace period (the full grace while no signal has arrived)."""
        if self.received_at is None:
            return self.grace
        return self.grace - (time.monotonic() - self.received_at)

"""A train pod that runs several trials of its round in turn (``search.trials_per_pod`` > 1).

``python -m components.train --pod-trials '<item>' <the trial args less --trial-id/--params>``:
the item is the suggest step's (:mod:`components.search.pod_queue`: the round's trials, this pod's
slot). The pod claims trials from the round's queue on the shared disk, one at a time, and runs
each through the supervisor's own entry (:func:`components.train.main` with that trial's
``--trial-id`` and ``--params``) in this one process: Python, torch, the trainer's imports and
the MLflow connection are paid once, and a trial that ends early (pruned) is followed at once by
the next unclaimed one. Every trial is still a trial of its own: its MLflow run, folder,
checkpoints, ``result.json``, ``attempts.jsonl`` (its own retry number from its claim's visits),
Optuna trial, pruning and lineage (its trial spec is that of a one-trial pod).

Per trial, :func:`components.train.main` installs a fresh SIGTERM handler (a stop received before
is taken over: :meth:`StopSignal.install`) and this module resets the process's spans; sender
threads end with each trial's harness. The process exits (``leave``, the fast path) once, after
the last trial.

Exit codes for the pod as a whole (DESIGN.md): 143 as soon as a trial is preempted or SIGTERM
arrives between trials (no new trial starts; the retry resumes only that trial from its
checkpoint, skips the finished ones and runs the rest); else 1 when a trial's application error
left it retryable (the others still ran: its batch-mates' work is kept, and the retry resumes it
with its app-error count on record); else 3 when a trial gave up; else 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from components.contract import (
    EXIT_DONE,
    EXIT_GIVE_UP,
    EXIT_PREEMPTED,
    EXIT_RETRY,
    canonical_json,
    resolve_sweep_id,
    result_file,
    shared_root,
    trial_dir,
)
from components.runtime.trial import GiveUp, StopSignal, read_result
from components.search.pod_queue import Queue, RoundItem
from components.step_start import LOG_FORMAT

__all__ = ["FLAG", "run", "split"]

log = logging.getLogger("components.train")
FLAG = "--pod-trials"
ATTEMPT_ENV = "SWEEPYARD_ATTEMPT"
FINAL = ("done", "pruned", "failed", "skipped")

TrialMain = Callable[[Sequence[str]], int]


def split(argv: Sequence[str] | None) -> tuple[str, list[str]] | None:
    """``(the item, the other args)`` when ``argv`` (None: ``sys.argv[1:]``) has ``--pod-trials``."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == FLAG and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(FLAG + "="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None


def run(raw: str, rest: list[str], trial: TrialMain) -> int:
    """Run this pod's trials of the round in turn; the pod's exit code (see the module)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        item = RoundItem.from_json(raw)
        sweep_id = resolve_sweep_id(_flag(rest, "--sweep-id"))
        queue = Queue(shared_root(), sweep_id, item.queue)
    except (ValueError, GiveUp) as exc:
        print(f"train: {FLAG}: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    pod = PodRun(item, queue, sweep_id, rest, trial)
    return pod.run()


class PodRun:
    """One attempt of one pod: the trials its slot resumes, then the ones it claims."""

    def __init__(
        self, item: RoundItem, queue: Queue, sweep_id: str, rest: list[str], trial: TrialMain
    ) -> None:
        self.item, self.queue, self.sweep_id, self.rest, self.trial = (
            item, queue, sweep_id, rest, trial,
        )  # fmt: skip
        self.retried = ATTEMPT_ENV in os.environ  # Argo/the local backend number the retries
        self.codes: dict[str, int] = {}  # each trial's exit code (a give-up found on record: 3)
        self.ran = 0  # trials this attempt ran

    def run(self) -> int:
        slot = self.item.slot
        for tid, params in self.item.trials:  # this slot's claims of an earlier attempt first
            if self.queue.owner(tid) != slot:
                continue
            status = self._status(tid)
            if status in FINAL:
                log.info("trial %s is already %s: not rerun", tid, status)
                if status == "failed":
                    self.codes[tid] = EXIT_GIVE_UP
                continue
            if self._stopping():
                return EXIT_PREEMPTED
            self.queue.revisit(tid, slot)
            if self._one(tid, params) == EXIT_PREEMPTED:
                return EXIT_PREEMPTED
        for tid, params in self.item.order():
            if tid in self.codes or self._status(tid) in FINAL:
                continue
            if self._stopping():
                return EXIT_PREEMPTED
            if not self.queue.claim(tid, slot):
                continue
            if self._one(tid, params) == EXIT_PREEMPTED:
                return EXIT_PREEMPTED
        return self._exit_code()

    def _one(self, tid: str, params: dict[str, Any]) -> int:
        visits = len(self.queue.visits(tid))
        self.ran += 1
        log.info(
            "pod slot %d of %d (queue %s): trial %d of this pod: %s (visit %d)",
            self.item.slot, self.item.slots, self.item.queue, self.ran, tid, visits,
        )  # fmt: skip
        if self.retried:  # the trial's own retry number: the visits of its claim before this one
            os.environ[ATTEMPT_ENV] = str(max(0, visits - 1))
        if self.ran > 1:
            _reset_process_state()
        argv = ["--trial-id", tid, "--params", canonical_json(params), *self.rest]
        code = self.codes[tid] = self.trial(argv)
        log.info("pod slot %d: trial %s exited %d", self.item.slot, tid, code)
        return EXIT_PREEMPTED if code == EXIT_PREEMPTED or self._stopping() else code

    def _status(self, tid: str) -> str | None:
        doc = read_result(result_file(trial_dir(shared_root(), self.sweep_id, tid)))
        return None if doc is None else doc.get("status")

    def _stopping(self) -> bool:
        handler = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        return isinstance(handler, StopSignal) and handler.requested

    def _exit_code(self) -> int:
        codes = set(self.codes.values())
        log.info("pod slot %d: ran %d trials, none left to claim", self.item.slot, self.ran)
        if codes - {EXIT_DONE, EXIT_GIVE_UP}:
            return EXIT_RETRY  # a trial to retry (an application error): the pod's retry resumes it
        return EXIT_GIVE_UP if EXIT_GIVE_UP in codes else EXIT_DONE


def _reset_process_state() -> None:
    """What one trial leaves in the process that the next must not inherit: the spans (the next
    trial's 'imports' is then the time since this reset, none: they are paid). The SIGTERM
    handler is the next trial's supervisor's to install; the metric sender thread ended with the
    last trial's harness (one still alive, its flush timed out, is said, and left to end)."""
    from components.runtime.spans import SPANS

    SPANS.reset(origin=time.monotonic())
    senders = [t for t in threading.enumerate() if t.name == "mlflow-sender" and t.is_alive()]
    if senders:
        log.warning("%d metric sender thread(s) of an earlier trial still running", len(senders))


def _flag(args: Sequence[str], name: str) -> str:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return ""

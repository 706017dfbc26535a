"""A command trainer: any program, run as a supervised child (the command contract).

The program gets its trial in the environment (``SWEEPYARD_PARAMS``, ``SWEEPYARD_CHECKPOINT_DIR``,
``SWEEPYARD_METRICS``, ... see :func:`child_env`) and runs in its own process group. The supervisor
tails the metrics file while it runs and relays each (metric, step) once to MLflow and TensorBoard
(:class:`MetricsRelay`), passes SIGTERM on, and maps how the program ends to the trial's outcome:
exit 0 done, non-zero an application error, ended after SIGTERM preempted, not found give up.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.command import fill_command
from components.model import model_dir
from components.runtime.harness import Harness
from components.runtime.pruning import Pruned
from components.runtime.trial import AttemptLog, GiveUp, Preempted
from components.runtime.trial_run import TrialSpec

log = logging.getLogger("components.train")

METRICS_FILE = "metrics.jsonl"
PROGRAM_CHECKPOINTS = "checkpoints"
HARNESS_CHECKPOINTS = ".supervisor-checkpoints"  # the harness's own (unused for commands)
SECRETS = ("SENTRY_DSN", "MLFLOW_TRACKING_TOKEN", "SWEEPYARD_DB_PASSWORD", "SLACK_WEBHOOK_URL")
POLL_SECONDS = 0.2
KILL_MARGIN_SECONDS = 1.0


class MetricsRelay:
    """Tails the program's metrics file and logs each (metric, step) once through the harness.

    The file lives on the shared disk across attempts: each attempt reads it from the start (the
    sender drops steps MLflow already has, TensorBoard's purge drops the earlier attempt's events),
    and a step the resumed program writes again is skipped.
    """

    def __init__(self, path: Path, harness: Harness) -> None:
        self.path = path
        self.harness = harness
        self.offset = 0
        self.last: dict[str, int] = {}
        self.bad_lines = 0

    @property
    def step(self) -> int:
        """The highest step relayed."""
        return max(self.last.values(), default=0)

    def pump(self) -> None:
        """Relay the complete lines appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in chunk[: end + 1].splitlines():
            if line.strip():
                self._relay(line)

    def _relay(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            step = rec["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise ValueError(f"step must be an integer, got {step!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_lines += 1
            if self.bad_lines <= 3:
                log.warning("%s: skipping a line that is not a metrics record: %s", self.path, exc)
            return
        new = {
            k: float(v)
            for k, v in rec.items()
            if k != "step"
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and step > self.last.get(k, -1)
        }
        if new:
            self.harness.log(step, new)
            self.last.update(dict.fromkeys(new, step))


def child_env(spec: TrialSpec, tdir: Path, attempt: int) -> dict[str, str]:
    """The program's environment: the supervisor's, less its secrets, plus the trial.

    The supervisor's interpreter folder comes first on ``PATH``, so ``python`` in a command is
    the one that runs the supervisor (in the image it already is; locally, the project's venv).
    """
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    env.update(
        SWEEPYARD_PARAMS=json.dumps(spec.params, sort_keys=True),
        SWEEPYARD_TRIAL_ID=spec.trial_id,
        SWEEPYARD_SWEEP_ID=spec.sweep_id,
        SWEEPYARD_DATA=str(spec.data),
        SWEEPYARD_CHECKPOINT_DIR=str(tdir / PROGRAM_CHECKPOINTS),
        SWEEPYARD_MODEL_DIR=str(model_dir(tdir)),
        SWEEPYARD_METRICS=str(tdir / METRICS_FILE),
        SWEEPYARD_ATTEMPT=str(attempt),
    )
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the program in its own process group (it dies with the supervisor).

    Raises:
        GiveUp: the program is not found or not executable.
    """
    try:
        return subprocess.Popen(
            list(argv), env=dict(env), start_new_session=True, preexec_fn=_die_with_parent
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise GiveUp(f"command {argv[0]!r} cannot be run: {exc.strerror or exc}") from exc


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def supervise(proc: subprocess.Popen[bytes], relay: MetricsRelay, harness: Harness) -> str:
    """Relay metrics until the program exits; ``"exited"``, ``"preempted"`` or ``"pruned"``."""
    reason, deadline = "exited", 0.0
    while proc.poll() is None:
        relay.pump()
        if reason == "exited" and (harness.stop.requested or harness.prune_step is not None):
            reason = "preempted" if harness.stop.requested else "pruned"
            log.info("%s: sending SIGTERM to the program (pid %d)", reason, proc.pid)
            _signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + max(0.5, harness.stop.remaining() - KILL_MARGIN_SECONDS)
        if reason != "exited" and time.monotonic() > deadline:
            log.warning("the program outlived its grace period: SIGKILL")
            _signal(proc, signal.SIGKILL)
            proc.wait()
        time.sleep(POLL_SECONDS)
    relay.pump()
    if reason == "exited" and harness.stop.requested:
        reason = "preempted"  # the program ended on the SIGTERM its group got with ours
    return reason


def command_trainer(template: Sequence[str]) -> Any:
    """The supervisor's training callable for a command trainer (see :func:`run_command`)."""

    def train(
        spec: TrialSpec, harness: Harness, attempt: AttemptLog
    ) -> tuple[int, dict[str, float]]:
        return run_command(template, spec, harness, attempt.number)

    return train


def run_command(
    template: Sequence[str], spec: TrialSpec, harness: Harness, attempt: int
) -> tuple[int, dict[str, float]]:
    """Run the program to its end; ``(last step, last value of each metric)``.

    Raises:
        GiveUp: a placeholder names no param, or the program is not found.
        Preempted: SIGTERM arrived (passed on to the program).
        Pruned: the study stopped the trial (the program got SIGTERM).
        RuntimeError: the program exited non-zero (an application error).
    """
    try:
        argv = fill_command(template, spec.params)
    except KeyError as exc:
        raise GiveUp(f"--trainer-command: {exc.args[0]}") from exc
    tdir = harness.trial_dir
    (tdir / PROGRAM_CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    model_dir(tdir).mkdir(parents=True, exist_ok=True)
    relay = MetricsRelay(tdir / METRICS_FILE, harness)
    relay.pump()  # earlier attempts' lines first
    log.info("running %s (attempt %d)", argv, attempt)
    proc = start(argv, child_env(spec, tdir, attempt))
    reason = supervise(proc, relay, harness)
    if reason == "preempted":
        raise Preempted(f"preempted at step {relay.step} (the program exited {proc.returncode})")
    if reason == "pruned" and harness.prune_step is not None:
        raise Pruned(harness.prune_step)
    if proc.returncode != 0:
        raise RuntimeError(f"the command {argv[0]!r} exited with {proc.returncode}")
    metrics = harness.last_metrics()
    harness.logger.hparams({**spec.params, "trial_id": spec.trial_id}, metrics, relay.step)
    return relay.step, metrics

"""One attempt of a container or script step, as a local process group (the local "pod").

The process runs in its own session (so Ctrl-C on the terminal reaches only the runner, which then
stops every group); its stdout is both the log and ``outputs.result``; a preemption is SIGTERM to the
group, then SIGKILL after the grace period, exactly as the kubelet deletes a pod.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipelines.argo.vocab import NodePhase

PYTHON_NAMES = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
PREEMPTED_MESSAGE = "pod deleted (preempted: local chaos)"
RESULT_LIMIT = 256 * 1024  # Argo keeps at most 256 kB of stdout as outputs.result
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass
class Attempt:
    """One try of a step: what ran and how it ended (exit code as Argo shows it: 128+signal)."""

    index: int
    log: Path
    started: float = field(default_factory=time.time)
    finished: float | None = None
    exit_code: int | None = None
    phase: NodePhase = NodePhase.RUNNING
    message: str = ""
    preempted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.index,
            "phase": self.phase,
            "exit_code": self.exit_code,
            "message": self.message,
            "preempted": self.preempted,
            "started": self.started,
            "finished": self.finished,
            "log": str(self.log),
        }


class ProcessTable:
    """Every live process group the run started, so one call can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, subprocess.Popen[bytes]] = {}

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._groups[proc.pid] = proc

    def remove(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._groups.pop(proc.pid, None)

    def pids(self) -> list[int]:
        with self._lock:
            return list(self._groups)

    def stop_all(self, grace: float) -> None:
        """SIGTERM every group, SIGKILL what is left after ``grace`` seconds."""
        with self._lock:
            procs = list(self._groups.values())
        for p in procs:
            _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            _killpg(p.pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def local_argv(command: list[str], args: list[str]) -> list[str]:
    """``command + args`` with ``python`` meaning this project's interpreter."""
    argv = [str(a) for a in [*command, *args]]
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = sys.executable
    return argv


@dataclass
class PodSpec:
    """What to run for one attempt, already substituted and mapped to local paths."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    grace: float
    deadline: float | None  # seconds (template activeDeadlineSeconds)
    preempt_after: float | None  # seconds after start (chaos), None: no preemption


def run_attempt(
    spec: PodSpec,
    attempt: Attempt,
    table: ProcessTable,
    stopping: threading.Event,
    on_start: Callable[[], None] | None = None,
) -> str:
    """Run one attempt to its end; fills ``attempt`` and returns the process's stdout.

    Phases: ``Succeeded`` (exit 0), ``Failed`` (non-zero exit, or the template's deadline),
    ``Error`` (preempted, i.e. the pod was deleted; or the command could not start).
    """
    proc = _start(spec, attempt)
    if proc is None:
        return ""
    table.add(proc)
    if on_start is not None:
        on_start()
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=_pump, args=(proc, attempt.log, out_chunks), daemon=True)
    reader.start()
    try:
        signalled = _watch(proc, spec, stopping)
    finally:
        _killpg(proc.pid, signal.SIGKILL)  # no stragglers left behind by the step
        reader.join(timeout=10)
        table.remove(proc)
    _settle(attempt, proc.returncode, signalled, stopping)
    return b"".join(out_chunks).decode(errors="replace")


class Signalled(StrEnum):
    """Why the runner ended an attempt's process itself."""

    STOPPED = "stopped"  # the run is stopping: the run's table signals every group
    DEADLINE = "deadline"  # the template's activeDeadlineSeconds
    PREEMPTED = "preempted"  # an injected preemption (local chaos)


def _start(spec: PodSpec, attempt: Attempt) -> subprocess.Popen[bytes] | None:
    """The attempt's process group, stderr to its log (None: it could not start; ``attempt``
    says why)."""
    attempt.log.parent.mkdir(parents=True, exist_ok=True)
    with open(attempt.log, "ab") as err_log:
        try:
            return subprocess.Popen(
                spec.argv,
                stdout=subprocess.PIPE,
                stderr=err_log,
                stdin=subprocess.DEVNULL,
                env=spec.env,
                cwd=spec.cwd,
                start_new_session=True,
            )
        except OSError as e:
            attempt.finished = time.time()
            attempt.phase, attempt.message = NodePhase.ERROR, f"cannot start {spec.argv[0]!r}: {e}"
            err_log.write(f"{attempt.message}\n".encode())
            return None


@dataclass
class _Timetable:
    """The moments (``time.monotonic``) an attempt's process is signalled at, computed once at its
    start: the deadline and the preemption (SIGTERM), then SIGKILL a grace period after."""

    deadline_at: float | None
    preempt_at: float | None
    grace: float
    kill_at: float | None = None

    @classmethod
    def starting(cls, spec: PodSpec, started: float) -> _Timetable:
        return cls(
            deadline_at=None if spec.deadline is None else started + spec.deadline,
            preempt_at=None if spec.preempt_after is None else started + spec.preempt_after,
            grace=spec.grace,
        )

    def wait(self, signalled: Signalled | None, now: float) -> float:
        """How long to wait for the process before looking again (at most 0.5 s)."""
        events = [now + 1e9]
        if signalled is None:
            events += [t for t in (self.preempt_at, self.deadline_at) if t is not None]
        if self.kill_at is not None:
            events.append(self.kill_at)
        return max(0.0, min(min(events) - now, 0.5))

    def due(self, stopping: threading.Event, now: float) -> Signalled | None:
        """What ends the process now, if anything (the run stopping first, then the deadline)."""
        if stopping.is_set():
            return Signalled.STOPPED
        if self.deadline_at is not None and now >= self.deadline_at:
            return Signalled.DEADLINE
        if self.preempt_at is not None and now >= self.preempt_at:
            return Signalled.PREEMPTED
        return None


def _watch(
    proc: subprocess.Popen[bytes], spec: PodSpec, stopping: threading.Event
) -> Signalled | None:
    """Wait for the process; on its deadline or preemption SIGTERM its group, then SIGKILL it
    after the grace period. Returns what signalled it (None: it exited by itself)."""
    times = _Timetable.starting(spec, time.monotonic())
    signalled: Signalled | None = None
    while True:
        try:
            proc.wait(timeout=times.wait(signalled, time.monotonic()))
            return signalled
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        signalled = signalled or times.due(stopping, now)
        if signalled in (Signalled.DEADLINE, Signalled.PREEMPTED) and times.kill_at is None:
            _killpg(proc.pid, signal.SIGTERM)
            times.kill_at = now + times.grace
        if times.kill_at is not None and now >= times.kill_at:
            _killpg(proc.pid, signal.SIGKILL)
            times.kill_at = now + 3600  # sent once


def _settle(
    attempt: Attempt, code: int, signalled: Signalled | None, stopping: threading.Event
) -> None:
    """How the attempt ended, as Argo shows it (exit code 128+signal for a signal)."""
    attempt.exit_code = 128 - code if code < 0 else code
    attempt.finished = time.time()
    if signalled is Signalled.PREEMPTED:
        attempt.phase, attempt.message, attempt.preempted = (
            NodePhase.ERROR,
            PREEMPTED_MESSAGE,
            True,
        )
    elif signalled is Signalled.DEADLINE:
        attempt.phase, attempt.message = NodePhase.FAILED, DEADLINE_MESSAGE
    elif signalled is Signalled.STOPPED or (stopping.is_set() and code != 0):
        attempt.phase, attempt.message = NodePhase.FAILED, "stopped: the run was interrupted"
    elif code == 0:
        attempt.phase = NodePhase.SUCCEEDED
    else:
        attempt.phase = NodePhase.FAILED
        attempt.message = f"Error (exit code {attempt.exit_code})"


def _pump(proc: subprocess.Popen[bytes], log: Path, chunks: list[bytes]) -> None:
    """Copy stdout to the log; keep its last ``RESULT_LIMIT`` bytes for ``outputs.result``."""
    assert proc.stdout is not None
    kept = 0
    with open(log, "ab") as f:
        for line in iter(proc.stdout.readline, b""):
            chunks.append(line)
            kept += len(line)
            while kept > RESULT_LIMIT and len(chunks) > 1:
                kept -= len(chunks.pop(0))
            f.write(line)
            f.flush()
    proc.stdout.close()


def read_output(path: str, outputs_dir: Path, outputs_prefix: str) -> str | None:
    """The value of an output parameter file (``/tmp/outputs/x`` maps to the attempt's folder)."""
    local = Path(path)
    if path == outputs_prefix or path.startswith(outputs_prefix.rstrip("/") + "/"):
        local = outputs_dir / path[len(outputs_prefix) :].lstrip("/")
    try:
        return local.read_text().strip()
    except OSError:
        return None


def map_mounts(value: str, mounts: Mapping[str, Path]) -> str:
    """A path under a volume's mount path, as the local folder of that volume (longest mount wins)."""
    for mount in sorted(mounts, key=len, reverse=True):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(mounts[mount] / value[len(mount) :].lstrip("/")).rstrip("/")
    return value

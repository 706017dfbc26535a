"""A command trainer: any program, run as a supervised child (the command contract).

The program gets its trial on its command line (``{param}`` and ``{data}``, ``{checkpoint_dir}``,
``{model_dir}``, ``{trial_id}``, ``{workdir}`` placeholders) and in the environment
(``SWEEPYARD_PARAMS``, ``SWEEPYARD_CHECKPOINT_DIR``, ``SWEEPYARD_METRICS``, ... see
:func:`child_env`), and runs in its own process group in the trial's working folder (``work/``, kept
across attempts, also its ``HOME`` and ``TMPDIR``). The supervisor relays each (metric, step) once to
MLflow and TensorBoard (:class:`MetricsRelay`): from the ``SWEEPYARD_METRICS`` file and from what
the trial's collectors read (printed lines, a file, TensorBoard events:
:class:`~components.runtime.collection.Collection`); passes SIGTERM on; and maps how the program
ends to the trial's outcome: exit 0 done, non-zero an application error, ended after SIGTERM
preempted, not found give up.

A distributed command trial (``--nproc-per-node``/``--nnodes``) runs the program under
``torchrun --no-python`` (it gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), local rank 0's output alone reaching the collectors; node 0's supervisor tracks,
the other nodes' only run torchrun (:func:`run_peer_node`). Each rank's program runs under
:mod:`components.runtime.rank_exit`, so a rank that failed on its own is told from one that was
killed (with its node, or alone): the first is an application error, the second a preemption.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.command import fill_command
from components.contract import (
    COLLECTED_FILE,
    EXIT_DONE,
    EXIT_PREEMPTED,
    METRICS_FILE,
    SUPERVISOR_CHECKPOINTS_DIR,
    attempts_file,
    checkpoints_dir,
    model_dir,
    shared_root,
    trial_dir,
    work_dir,
    work_tmp_dir,
)
from components.runtime import rank_exit
from components.runtime.collection import Collection
from components.runtime.distributed import read_rank_records, torchrun_argv
from components.runtime.harness import Harness
from components.runtime.metrics_relay import MetricsRelay
from components.runtime.pruning import Pruned
from components.runtime.trial import AttemptLog, GiveUp, Preempted, StopSignal
from components.runtime.trial_spec import TrialSpec

log = logging.getLogger("components.train")

HARNESS_CHECKPOINTS = SUPERVISOR_CHECKPOINTS_DIR  # the harness's own (unused for commands)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch, numpy and most BLAS read these
SECRETS = ("SENTRY_DSN", "MLFLOW_TRACKING_TOKEN", "SWEEPYARD_DB_PASSWORD", "SLACK_WEBHOOK_URL")
POLL_SECONDS = 0.2
KILL_MARGIN_SECONDS = 1.0


def child_env(spec: TrialSpec, tdir: Path, attempt: int) -> dict[str, str]:
    """The program's environment: the supervisor's, less its secrets, plus the trial.

    The supervisor's interpreter folder comes first on ``PATH``, so ``python`` in a command is
    the one that runs the supervisor (in the image it already is; locally, the project's venv);
    the supervisor's folder comes first on ``PYTHONPATH``, so ``python -m pkg.train`` finds what it
    found before the program moved to its working folder. ``HOME`` and ``TMPDIR`` are in the
    working folder; the thread counts follow the trial's CPUs unless the environment sets them.
    """
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    work = work_dir(tdir)
    work_tmp_dir(tdir).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(work), TMPDIR=str(work_tmp_dir(tdir)))
    for name in THREAD_VARS:
        env.setdefault(name, str(spec.threads))
    env.update(
        SWEEPYARD_PARAMS=json.dumps(spec.params, sort_keys=True),
        SWEEPYARD_TRIAL_ID=spec.trial_id,
        SWEEPYARD_SWEEP_ID=spec.sweep_id,
        SWEEPYARD_DATA=str(spec.data or ""),
        SWEEPYARD_CHECKPOINT_DIR=str(checkpoints_dir(tdir)),
        SWEEPYARD_MODEL_DIR=str(model_dir(tdir)),
        SWEEPYARD_METRICS=str(tdir / METRICS_FILE),
        SWEEPYARD_WORKDIR=str(work),
        SWEEPYARD_ATTEMPT=str(attempt),
    )
    return env


def places(spec: TrialSpec, tdir: Path) -> dict[str, str]:
    """The values of the reserved placeholders (:data:`components.command.RESERVED`)."""
    return {
        "data": str(spec.data or ""),
        "checkpoint_dir": str(checkpoints_dir(tdir)),
        "model_dir": str(model_dir(tdir)),
        "trial_id": spec.trial_id,
        "workdir": str(work_dir(tdir)),
    }


def anchored(argv: Sequence[str], cwd: Path) -> list[str]:
    """``argv`` with each relative path that names a file or folder under ``cwd`` made absolute:
    the program runs in its trial's working folder, and ``python examples/train.py`` still finds
    what it found from ``cwd``. Options (``-x``, ``--x=y``) and bare names (``python``) stay."""
    out = list(argv)
    for i, arg in enumerate(out):
        if not arg or arg.startswith("-") or os.path.isabs(arg) or (i == 0 and "/" not in arg):
            continue
        if (cwd / arg).exists():
            out[i] = str(cwd / arg)
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None, pipe: bool = False
) -> subprocess.Popen[bytes]:
    """Start the program in its own process group (it dies with the supervisor), in ``cwd``;
    with ``pipe``, its stdout and stderr come to the supervisor.

    Raises:
        GiveUp: the program is not found or not executable.
    """
    out = subprocess.PIPE if pipe else None
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise GiveUp(f"command {argv[0]!r} cannot be run: {exc.strerror or exc}") from exc


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def supervise(proc: subprocess.Popen[bytes], relays: Sequence[Any], harness: Harness) -> str:
    """Pump ``relays`` (each has ``pump()``) until the program exits; ``"exited"``,
    ``"preempted"`` or ``"pruned"``."""
    reason, deadline = "exited", 0.0
    while proc.poll() is None:
        for relay in relays:
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
    if reason == "exited" and harness.stop.requested:
        reason = "preempted"  # the program ended on the SIGTERM its group got with ours
    return reason


def command_trainer(
    template: Sequence[str], collect: Mapping[str, Any] | None = None, model: str | None = None
) -> Any:
    """The supervisor's training callable for a command trainer (see :func:`run_command`)."""

    def train(
        spec: TrialSpec, harness: Harness, attempt: AttemptLog
    ) -> tuple[int, dict[str, float]]:
        return run_command(template, spec, harness, attempt, collect=collect, model=model)

    return train


def run_command(
    template: Sequence[str],
    spec: TrialSpec,
    harness: Harness,
    attempt: AttemptLog,
    *,
    collect: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> tuple[int, dict[str, float]]:
    """Run the program to its end; ``(last step, last value of each metric)``.

    Raises:
        GiveUp: a placeholder names no param, the program is not found, or the objective was
            never collected (the message names the sources looked at).
        Preempted: SIGTERM arrived (passed on to the program).
        Pruned: the study stopped the trial (the program got SIGTERM).
        RuntimeError: the program exited non-zero (an application error).
    """
    tdir = harness.trial_dir
    argv = _program_argv(template, spec, tdir, attempt.number)
    started = time.time()
    checkpoints_dir(tdir).mkdir(parents=True, exist_ok=True)
    model_dir(tdir).mkdir(parents=True, exist_ok=True)
    metrics_file = MetricsRelay(tdir / METRICS_FILE, harness)
    relays = [metrics_file, MetricsRelay(tdir / COLLECTED_FILE, harness)]
    for relay in relays:
        relay.pump()  # earlier attempts' lines first
    metrics_file.progress = attempt.progress  # from now on: this attempt's own steps (collected
    # readings are counted as they are collected)
    try:
        collection = Collection(collect, work_dir(tdir), tdir / COLLECTED_FILE, attempt.progress)
    except ValueError as exc:
        raise GiveUp(f"--collect: {exc}") from exc
    log.info("running %s in %s (attempt %d)", argv, work_dir(tdir), attempt.number)
    env = child_env(spec, tdir, attempt.number)
    proc = start(argv, env, cwd=work_dir(tdir), pipe=collection.pipes_output)
    collection.attach(proc.stdout, proc.stderr)
    reason = supervise(proc, [collection, *relays], harness)
    collection.finish()
    for relay in relays:
        relay.pump()
    _raise_unless_done(reason, proc.returncode, argv[0], spec, tdir, attempt, harness, started)
    metrics = harness.last_metrics()
    if spec.objective not in metrics and collect:
        reported = ", ".join(sorted(metrics)) or "nothing"
        raise GiveUp(f"{collection.missing(spec.objective)} (it reported: {reported})")
    if model:
        keep_model(work_dir(tdir) / model, model_dir(tdir))
    step = max(relay.step for relay in relays)
    harness.logger.hparams({**spec.params, "trial_id": spec.trial_id}, metrics, step)
    return step, metrics


def _program_argv(template: Sequence[str], spec: TrialSpec, tdir: Path, attempt: int) -> list[str]:
    """The program's command line: placeholders filled, anchored, under torchrun when the trial
    is distributed (local rank 0's output to the collectors, a rank's own failure on record)."""
    try:
        argv = fill_command(template, {**spec.params, **places(spec, tdir)})
    except KeyError as exc:
        raise GiveUp(f"--trainer-command: {exc.args[0]}") from exc
    argv = anchored(argv, Path.cwd())
    if spec.topology is not None:
        ranked = rank_exit.wrap(tdir, attempt, argv)
        argv = torchrun_argv(spec.topology, ranked, python=sys.executable, no_python=True)
    return argv


def _raise_unless_done(
    reason: str,
    returncode: int,
    program: str,
    spec: TrialSpec,
    tdir: Path,
    attempt: AttemptLog,
    harness: Harness,
    started: float,
) -> None:
    """Raise what the program's end means unless it succeeded: :class:`Preempted` (SIGTERM, a
    lost rank or node), :class:`Pruned`, or ``RuntimeError`` (an application error)."""
    if reason == "preempted":
        reached = attempt.redo.step
        at = f"at step {reached}" if reached else "before it reported a step"
        raise Preempted(f"preempted {at} (the program exited {returncode})")
    if reason == "pruned" and harness.prune_step is not None:
        raise Pruned(harness.prune_step)
    if returncode != 0 and spec.topology is not None:
        failed = read_rank_records(tdir, since=started)
        if not failed:  # no rank failed on its own: one was killed, with its node or alone
            raise Preempted(f"a rank or node of the gang was lost (torchrun exited {returncode})")
        first = min(failed, key=lambda r: float(r.get("time") or 0.0))  # the cause, not a peer's
        raise RuntimeError(str(first.get("error")))  # failure that followed it
    if returncode != 0:
        raise RuntimeError(f"the command {program!r} exited with {returncode}")


def run_peer_node(template: Sequence[str], spec: TrialSpec, stop: StopSignal) -> int:
    """A node other than 0 of a distributed command trial: run this node's ranks under torchrun
    (node 0's supervisor tracks the trial); 0 when they succeeded, 143 after SIGTERM, else 1."""
    tdir = trial_dir(shared_root(), spec.sweep_id, spec.trial_id)
    try:
        argv = fill_command(template, {**spec.params, **places(spec, tdir)})
    except KeyError as exc:
        raise GiveUp(f"--trainer-command: {exc.args[0]}") from exc
    attempt = AttemptLog(attempts_file(tdir)).history.attempts or 1
    ranked = rank_exit.wrap(tdir, attempt, anchored(argv, Path.cwd()))
    argv = torchrun_argv(spec.topology, ranked, python=sys.executable, no_python=True)
    started = time.time()
    env = child_env(spec, tdir, attempt)
    log.info("node %d: running %s", spec.topology.node_rank, argv)
    proc = start(argv, env, cwd=work_dir(tdir))
    deadline = None
    while proc.poll() is None:
        if stop.requested and deadline is None:
            _signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + max(0.5, stop.remaining() - KILL_MARGIN_SECONDS)
        if deadline is not None and time.monotonic() > deadline:
            _signal(proc, signal.SIGKILL)
            proc.wait()
        time.sleep(POLL_SECONDS)
    if proc.returncode == 0:
        return EXIT_DONE
    own = read_rank_records(tdir, ranks=spec.topology.ranks(), since=started)
    return 1 if own and not stop.requested else EXIT_PREEMPTED  # else: a peer or node was lost


def keep_model(source: Path, folder: Path) -> None:
    """Put the model the program left in its working folder (``trainer.model``) in the trial's
    model folder, whole or not at all (hard links where the disk allows: no second copy)."""
    if not source.exists():
        log.warning("trainer.model: the program left no %s: this trial has no model", source)
        return
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, tmp / source.name, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(tmp / source.name))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

"""The trial supervisor: one attempt of one trial (``python -m components.train ...``).

It runs the sweep's trainer, either a Python function of the trainer contract
(``--trainer-function module:function``, see :mod:`components.api`) in this process, or any
program (``--trainer-command '["prog", "--lr", "{lr}"]'``, the command contract, see
:mod:`components.runtime.command_trainer`) as a supervised child. Everything that is not training
is the supervisor's: resume, checkpoints and RNG states, MLflow and TensorBoard, SIGTERM, pruning,
exit codes (:mod:`components.runtime.trial`), Sentry, ``attempts.jsonl`` and ``result.json``.

A distributed trial (``--nproc-per-node N`` and/or ``--nnodes M``, N*M > 1) runs under torchrun:
for a Python trainer this process is its node's launcher (:func:`launch`: torchrun runs
``-m components.train`` with the same trial args on each of the node's N ranks, rank 0 tracks); a
command trainer's supervisor stays one process per node and runs the program under
``torchrun --no-python``, node 0's tracking it. See :mod:`components.runtime.distributed`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from components.budget import Budget
from components.contract import (
    EXIT_DONE,
    EXIT_GIVE_UP,
    SharedRootError,
    attempts_file,
    resolve_sweep_id,
    result_file,
    shared_root,
    spool_file,
    trial_dir,
    trial_id,
)
from components.provenance import TRIAL_SPEC_ENV, spec_json
from components.runtime import distributed
from components.runtime.alerts import set_alert_tags
from components.runtime.distributed import Topology
from components.runtime.trial import (
    AttemptLog,
    GiveUp,
    StopSignal,
    read_result,
)
from components.step_start import start_step

__all__ = ["main"]

log = logging.getLogger("components.train")
DEFAULT_TRAINER = "components.trainers.digits:train"


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # bad command line = bad input: exit 3, never retried
        raise GiveUp(f"command line: {message}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = _Parser(prog="python -m components.train", description=__doc__.splitlines()[0])
    _add_trial_args(ap)
    _add_trainer_args(ap)
    _add_attempt_args(ap)
    _add_distributed_args(ap)
    args = ap.parse_args(argv)
    # the trial spec (what the config decides of a trial) for its lineage: components/provenance;
    # a torchrun worker keeps its launcher's (the launcher flags are not passed on)
    if not (distributed.is_worker() and os.environ.get(TRIAL_SPEC_ENV)):
        os.environ[TRIAL_SPEC_ENV] = spec_json(sys.argv[1:] if argv is None else argv)
    if args.keep_checkpoints < 1 or args.max_app_errors < 1 or args.checkpoint_interval < 0:
        raise GiveUp(
            "--keep-checkpoints and --max-app-errors must be >= 1, --checkpoint-interval >= 0"
        )
    # a torchrun worker's place is torchrun's (RANK, WORLD_SIZE): the launcher flags, and the
    # node index a JobSet pod has in its environment, were its launcher's
    args.topology = Topology() if distributed.is_worker() else topology(args)
    return args


def _add_trial_args(ap: argparse.ArgumentParser) -> None:
    """Which trial: sweep, trial id, params, data."""
    ap.add_argument("--sweep-id", default="", help='the sweep ("" = $SWEEPYARD_WORKFLOW_NAME)')
    ap.add_argument("--trial-id", required=True, help="components.contract.trial_id(params)")
    ap.add_argument("--params", required=True, help="the trial's params as JSON")
    ap.add_argument("--data", default="", help='folder of the fetched dataset ("": no data)')
    ap.add_argument("--data-hash", default="", help="content hash of the dataset (recorded)")


def _add_trainer_args(ap: argparse.ArgumentParser) -> None:
    """What trains: a function or a command (its collectors and model), the sweep's budgets and
    pruner, the objective."""
    trainer = ap.add_mutually_exclusive_group()
    trainer.add_argument(
        "--trainer-function",
        default=None,
        help=f"module:function of a Python trainer (default: {DEFAULT_TRAINER})",
    )
    trainer.add_argument(
        "--trainer-command", default=None, help="a command trainer's argv as a JSON list"
    )
    ap.add_argument(
        "--collect", default=None, help="a command's collectors (trainer.collect) as JSON"
    )
    ap.add_argument(
        "--model", default=None, help="the model a command leaves in its working folder"
    )
    ap.add_argument(
        "--budget", default="", help="the sweep's budgets as JSON (components.budget.Budget)"
    )
    ap.add_argument("--pruner", default="", help="early stopping: the study's spec as JSON")
    ap.add_argument("--objective", default="val_loss", help="the metric the sweep optimises")
    ap.add_argument("--direction", default="minimize", choices=("minimize", "maximize"))


def _add_attempt_args(ap: argparse.ArgumentParser) -> None:
    """How an attempt runs: checkpoints, error budget, flush, device and threads."""
    ap.add_argument("--checkpoint-interval", type=float, default=60.0, help="seconds")
    ap.add_argument("--keep-checkpoints", type=int, default=3)
    ap.add_argument(
        "--max-app-errors",
        type=int,
        default=3,
        help="application errors tolerated; the one that reaches it gives up (exit 3)",
    )
    ap.add_argument(
        "--flush-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for MLflow at the end before spooling the rest",
    )
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads (at most the CPUs this process has)"
    )


def _add_distributed_args(ap: argparse.ArgumentParser) -> None:
    """The launcher flags of a distributed trial (torchrun)."""
    dist = ap.add_argument_group("distributed trials (torchrun)")
    dist.add_argument("--nproc-per-node", type=int, default=1, help="processes per node")
    dist.add_argument("--nnodes", type=int, default=1, help="nodes")
    dist.add_argument(
        "--node-rank",
        type=int,
        default=None,
        help="this node (default: $JOB_COMPLETION_INDEX or 0)",
    )
    dist.add_argument(
        "--master-addr", default=None, help="node 0 (default: $SWEEPYARD_MASTER_ADDR or 127.0.0.1)"
    )
    dist.add_argument(
        "--master-port", type=int, default=None, help="(default: $SWEEPYARD_MASTER_PORT or 29500)"
    )


def topology(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Topology:
    """The five launcher flags, their defaults from the environment (JobSet/Indexed Job: the
    node's index in ``JOB_COMPLETION_INDEX``). Raises GiveUp."""
    env = os.environ if env is None else env

    def number(value: int | None, var: str, default: int) -> int:
        if value is not None:
            return value
        raw = env.get(var, "").strip()
        if not raw:
            return default
        if not raw.isdigit():
            raise GiveUp(f"${var}={raw!r}: not a number")
        return int(raw)

    topo = Topology(
        nproc_per_node=args.nproc_per_node,
        nnodes=args.nnodes,
        node_rank=number(args.node_rank, "JOB_COMPLETION_INDEX", 0),
        master_addr=args.master_addr or env.get("SWEEPYARD_MASTER_ADDR", "").strip() or "127.0.0.1",
        master_port=number(args.master_port, "SWEEPYARD_MASTER_PORT", 29500),
    )
    if topo.nproc_per_node < 1 or topo.nnodes < 1:
        raise GiveUp("--nproc-per-node and --nnodes must be >= 1")
    if not 0 <= topo.node_rank < topo.nnodes:
        raise GiveUp(f"--node-rank {topo.node_rank} is not in 0..{topo.nnodes - 1}")
    if not 0 < topo.master_port < 65536:
        raise GiveUp(f"--master-port {topo.master_port} is not a port")
    return topo


def main(argv: Sequence[str] | None = None) -> int:
    from components.runtime import pod_trials  # search.trials_per_pod > 1: trials in turn

    if (pod := pod_trials.split(argv)) is not None:
        return pod_trials.run(*pod, trial=main)
    start_step("train")
    try:
        stop = StopSignal().install()
        args = parse_args(argv)
        sweep_id = resolve_sweep_id(args.sweep_id)
    except (GiveUp, ValueError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    set_alert_tags(sweep=sweep_id, trial=args.trial_id)
    try:
        inputs = _inputs(args, sweep_id)
    except (GiveUp, SharedRootError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    if inputs is None:
        return EXIT_DONE
    topo: Topology = args.topology
    distributed_trial = topo.world_size > 1 and not distributed.is_worker()
    if distributed_trial and inputs.command is None:
        raw = sys.argv[1:] if argv is None else list(argv)
        from components.runtime.torchrun_launch import launch

        return launch(topo, raw, stop, sweep_id, args.trial_id)
    try:
        return _train(args, sweep_id, inputs, stop, distributed_trial)
    except GiveUp as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP


@dataclass
class _Inputs:
    """The JSON arguments, parsed."""

    params: dict[str, Any]
    pruner: dict[str, Any] | None
    command: list[str] | None
    collect: dict[str, Any] | None
    budget: Budget | None


def _inputs(args: argparse.Namespace, sweep_id: str) -> _Inputs | None:
    """The JSON arguments parsed and checked (None: the trial is finished already). Raises
    GiveUp."""
    params = _json_arg("--params", args.params, dict)
    if trial_id(params) != args.trial_id:
        raise GiveUp(
            f"--trial-id {args.trial_id} does not match the params "
            f"(their trial id is {trial_id(params)})"
        )
    if _already_finished(sweep_id, args.trial_id):
        return None
    return _Inputs(
        params=params,
        pruner=_json_arg("--pruner", args.pruner, dict) if args.pruner else None,
        command=_json_arg("--trainer-command", args.trainer_command, list),
        collect=_json_arg("--collect", args.collect, dict),
        budget=_budget(args.budget),
    )


def _train(
    args: argparse.Namespace,
    sweep_id: str,
    inputs: _Inputs,
    stop: StopSignal,
    distributed_trial: bool,
) -> int:
    """Run the trial in this process: a command (this node's part of it) or a Python trainer."""
    # torch and the trainer are imported only for a trial that trains (and the command
    # trainer's supervision only for a command)
    from components.runtime.trial_run import TrialSpec, run_trial

    topo: Topology = args.topology
    spec = TrialSpec(
        sweep_id=sweep_id,
        trial_id=args.trial_id,
        params=inputs.params,
        data=Path(args.data) if args.data else None,
        data_hash=args.data_hash,
        objective=args.objective,
        direction=args.direction,
        checkpoint_interval=args.checkpoint_interval,
        keep_checkpoints=args.keep_checkpoints,
        max_app_errors=args.max_app_errors,
        flush_timeout=args.flush_timeout,
        device=args.device,
        threads=usable_threads(args.threads),
        pruner=inputs.pruner,
        budget=inputs.budget,
        topology=topo if distributed_trial else None,
    )
    command = inputs.command
    if command is not None and distributed_trial and topo.node_rank != 0:
        from components.runtime.command_trainer import run_peer_node

        return run_peer_node(command, spec, stop)
    if command is not None:
        from components.runtime.command_trainer import HARNESS_CHECKPOINTS, command_trainer

        spec.checkpoint_dir = HARNESS_CHECKPOINTS
        train_command = command_trainer(command, collect=inputs.collect, model=args.model)
        return run_trial(spec, stop, train_command, lambda params: None)
    from components.runtime.function_trainer import function_trainer

    train, validate = function_trainer(args.trainer_function or DEFAULT_TRAINER)
    return run_trial(spec, stop, train, validate)


def _already_finished(sweep_id: str, tid: str) -> bool:
    """A finished trial (a resubmitted sweep, a retry after the end) exits before anything heavy
    is imported: its kill after the end, if any, is counted; points it left spooled are still
    delivered (by the full path)."""
    tdir = trial_dir(shared_root(), sweep_id, tid)
    previous = read_result(result_file(tdir))
    if previous is None or previous.get("status") not in ("done", "pruned"):
        return False
    if spool_file(tdir).exists():
        return False  # run_trial delivers them
    if AttemptLog(attempts_file(tdir)).lost:
        return False  # killed after it finished: run_trial counts it and tags the run
    log.info("trial %s is already %s: nothing to train", tid, previous["status"])
    return True


def _budget(raw: str) -> Budget | None:
    """``--budget`` parsed (None when not given). Raises GiveUp."""
    if not raw:
        return None
    try:
        return Budget.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise GiveUp(f"--budget: {exc}") from exc


def usable_threads(requested: int, env: Mapping[str, str] | None = None) -> int:
    """``requested`` threads, at most the CPUs this process may run on and ``SWEEPYARD_CPUS``
    (the local backend's share of the machine per running step), at least 1."""
    env = os.environ if env is None else env
    limits = [requested, len(os.sched_getaffinity(0))]
    if env.get("SWEEPYARD_CPUS", "").isdigit():
        limits.append(int(env["SWEEPYARD_CPUS"]))
    return max(1, min(limits))


def _json_arg(flag: str, raw: str | None, kind: type) -> Any:
    """Parse a JSON argument of the expected type (None stays None). Raises GiveUp."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise GiveUp(f"{flag}: not JSON: {exc}") from exc
    if kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
            raise GiveUp(f"{flag} must be a non-empty JSON list of strings")
    elif not isinstance(value, kind):
        raise GiveUp(f"{flag} must be a JSON object")
    return value


def leave(code: int) -> NoReturn:
    """Exit with ``code`` now, skipping the interpreter's teardown of its modules: with torch
    loaded it costs a trial's exit seconds (more on a loaded machine) and keeps nothing.

    Everything that must last is on disk when :func:`main` returns (the checkpoints, the model,
    ``result.json``, ``attempts.jsonl`` and the metric spool are written, fsynced and closed; the
    TensorBoard file is closed), and what Python would still run at exit is run first: the
    non-daemon threads are joined, the ``atexit`` handlers run (Sentry's flush, logging's), the
    standard streams are flushed. A file a trainer left open at module level is not flushed:
    ``SWEEPYARD_FAST_EXIT=0`` exits the usual way.
    """
    if os.environ.get("SWEEPYARD_FAST_EXIT", "1").strip() == "0":
        sys.exit(code)
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # (no public call runs the atexit handlers now: os._exit skips them)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())

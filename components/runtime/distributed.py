"""Distributed trials: the launcher's torchrun command line and the workers' process group.

A trial with ``--nproc-per-node N`` and ``--nnodes M`` (N*M > 1) runs as N processes per node
under torchrun. For a Python trainer the supervisor of each node is the node's *launcher*: it runs
``torchrun ... -m components.train <trial args>`` (:func:`torchrun_argv`) and maps how it ends to the
trial's exit code (:func:`launcher_exit_code`). Each worker knows it is one from torchrun's
environment (:meth:`Dist.from_env`); rank 0 alone tracks (MLflow, TensorBoard, ``attempts.jsonl``,
``result.json``); decisions reach every rank at the same step through one small all-reduce per step
(:meth:`Dist.sync_flags`). A rank that fails leaves ``ranks/<attempt>/rank-<r>.json`` so rank 0 (or
its node's launcher) can tell a peer's error from a lost peer (a disruption, exit 143).

This module imports no torch at import time: the launcher must stay light.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.contract import RANK_RECORDS, rank_record_file, rank_records_dir
from components.fsio import atomic_write_json

log = logging.getLogger(__name__)

LAUNCHER_FLAGS = ("--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port")
WORKER_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker it starts
PEER_WAIT_SECONDS = 5.0  # how long rank 0 waits for torchrun's SIGTERM after a peer vanished

# Flags exchanged at each step boundary (one all-reduce, MAX).
STOP, PRUNE, DUE, NO_FIT = range(4)


# --------------------------------------------------------------------------- the launcher


@dataclass(frozen=True)
class Topology:
    """Where one node's supervisor stands in a distributed trial (the five launcher flags)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def ranks(self) -> range:
        """The global ranks this node hosts."""
        first = self.node_rank * self.nproc_per_node
        return range(first, first + self.nproc_per_node)


def torchrun_argv(
    topo: Topology, tail: Sequence[str], *, python: str, no_python: bool = False
) -> list[str]:
    """``python -m torch.distributed.run`` for this node, then ``tail`` (the program).

    One node: ``--standalone``; more: a static rendezvous at ``master_addr:master_port``. torchrun
    never restarts workers (``--max-restarts 0``): gang restarts belong to the JobSet, Argo's retry
    or the local backend. With ``no_python`` (a command trainer) only local rank 0 prints to the
    console (the stdout collectors read one rank).
    """
    argv = [python, "-m", "torch.distributed.run"]
    if topo.nnodes == 1:
        argv += ["--standalone"]
    else:
        argv += [
            "--nnodes", str(topo.nnodes), "--node-rank", str(topo.node_rank),
            "--master-addr", topo.master_addr, "--master-port", str(topo.master_port),
        ]  # fmt: skip
    argv += ["--nproc-per-node", str(topo.nproc_per_node), "--max-restarts", "0"]
    if no_python:
        argv += ["--local-ranks-filter", "0", "--no-python"]
    return [*argv, *tail]


def strip_launcher_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` without the five launcher flags (``--flag value`` or ``--flag=value``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in LAUNCHER_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in LAUNCHER_FLAGS and "=" in arg:
            continue
        out.append(arg)
    return out


def is_worker(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a worker torchrun started (rather than a supervisor)."""
    env = os.environ if env is None else env
    return bool(env.get(WORKER_ENV)) and "RANK" in env and "WORLD_SIZE" in env


def rank_dir(tdir: Path, attempt: int) -> Path:
    return rank_records_dir(tdir, attempt)


def write_rank_record(tdir: Path, attempt: int, rank: int, code: int, error: str) -> None:
    """``ranks/<attempt>/rank-<r>.json``: how this rank failed (written atomically)."""
    atomic_write_json(
        rank_record_file(tdir, attempt, rank),
        {"rank": rank, "code": code, "error": error, "time": time.time()},
    )


def read_rank_records(
    tdir: Path, attempt: int | None = None, ranks: Sequence[int] | None = None, since: float = 0.0
) -> list[dict[str, Any]]:
    """The rank records of ``attempt`` (every attempt when None) written at or after ``since``,
    for ``ranks`` (every rank when None)."""
    base = rank_records_dir(tdir)
    folders = [rank_dir(tdir, attempt)] if attempt is not None else sorted(base.glob("*"))
    found = []
    for folder in folders:
        for path in sorted(folder.glob(RANK_RECORDS)):
            try:
                doc = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict) or doc.get("time", 0.0) < since:
                continue
            if ranks is None or doc.get("rank") in ranks:
                found.append(doc)
    return found


def peer_failure(records: Sequence[dict[str, Any]], own_rank: int) -> dict[str, Any] | None:
    """The first record of another rank naming a give-up (3) or an application error."""
    for code in (3, 1):
        for rec in records:
            if rec.get("rank") != own_rank and rec.get("code") == code:
                return rec
    return None


@dataclass
class AttemptEnd:
    """What rank 0 left in ``attempts.jsonl`` for the attempt the launcher ran."""

    started: bool = False
    exit_code: int | None = None  # None: no end record (rank 0 was killed)
    records: list[dict[str, Any]] = field(default_factory=list)


def read_attempt_end(path: Path, offset: int) -> AttemptEnd:
    """The start/end records appended to ``attempts.jsonl`` after byte ``offset``."""
    out = AttemptEnd()
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return out
    started: set[str] = set()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out.records.append(rec)
        if rec.get("event") == "start":
            out.started = True
            started.add(rec.get("id", ""))
            out.exit_code = None
        elif rec.get("event") == "end" and rec.get("id") in started:
            out.exit_code = int(rec.get("exit_code", 1))
    return out


def launcher_exit_code(
    *, node_rank: int, torchrun_rc: int, stopped: bool, end: AttemptEnd, failures: Sequence[int]
) -> int:
    """The trial's exit code on one node (DESIGN.md "Exit codes of a trial").

    Node 0 (hosting rank 0) follows rank 0's end record; when rank 0 left none, it was killed: a
    disruption (143), as is this launcher's own SIGTERM. Other nodes: 0 when their torchrun
    succeeded, 3 or 1 when one of their ranks gave up or failed on its own, else 143.
    """
    if node_rank == 0 and end.started:
        code = end.exit_code
        if code is None:
            return 143
        return code if code in (0, 3, 143) else 1
    if torchrun_rc == 0:
        return 0
    if stopped:
        return 143
    for code in (3, 1):
        if code in failures:
            return code
    return 143


# --------------------------------------------------------------------------- the workers


@dataclass
class Dist:
    """This process's place in the trial (1-process trials: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    _ckpt_group: Any = None
    _initialised: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Dist:
        env = os.environ if env is None else env
        if not is_worker(env):
            return cls()
        return cls(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )

    def init(self, device_type: str) -> None:
        """Join the process group (env:// from torchrun's env): gloo on CPU, NCCL on CUDA."""
        if not self.enabled or self._initialised:
            return
        import torch
        import torch.distributed as tdist

        _die_with_parent()  # torchrun gone: no orphaned worker
        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.backend = "cpu:gloo,cuda:nccl"
        else:
            self.backend = "gloo"
        tdist.init_process_group(backend=self.backend, init_method="env://")
        # checkpoints are written by a background thread: their collectives get a group of their
        # own, so they never interleave with the training loop's
        self._ckpt_group = tdist.new_group(backend="gloo")
        self._initialised = True
        log.info("rank %d of %d (local rank %d, %s)", self.rank, self.world_size,
                 self.local_rank, self.backend)  # fmt: skip

    @property
    def checkpoint_group(self) -> Any:
        return self._ckpt_group

    def destroy(self) -> None:
        if not self._initialised:
            return
        import torch.distributed as tdist

        with contextlib.suppress(Exception):
            tdist.destroy_process_group()
        self._initialised = False

    def sync_flags(self, flags: Sequence[int]) -> list[int]:
        """One all-reduce (MAX) of small integer flags; the same answer on every rank."""
        if not self.enabled:
            return list(flags)
        import torch
        import torch.distributed as tdist

        t = torch.tensor(list(flags), dtype=torch.int64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]

    def broadcast(self, obj: Any, group: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0, group=group)
        return box[0]


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because a peer is gone (not the trainer's bug)."""
    try:
        import torch.distributed as tdist

        if isinstance(exc, tdist.DistError):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, RuntimeError | ConnectionError) and any(
        s in text
        for s in ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "peer")
    )


def wait_for_peers(tdir: Path, attempt: int, own_rank: int, stop: Any) -> dict[str, Any] | None:
    """After a collective failed: wait (at most :data:`PEER_WAIT_SECONDS`) for torchrun's
    SIGTERM or a peer's rank record; the peer's give-up/app error, or None (a lost peer)."""
    deadline = time.monotonic() + PEER_WAIT_SECONDS
    while True:
        found = peer_failure(read_rank_records(tdir, attempt), own_rank)
        if found is not None or stop.requested or time.monotonic() > deadline:
            if found is None and stop.requested:
                time.sleep(0.2)  # a peer's record written as it died
                found = peer_failure(read_rank_records(tdir, attempt), own_rank)
            return found
        time.sleep(0.1)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

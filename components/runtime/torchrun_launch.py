"""A distributed Python trainer's launch on one node: its ranks under torchrun, whose end this
process maps to the trial's exit code on this node (``components.train`` runs it for a trial with
``--nproc-per-node`` or ``--nnodes`` above 1)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from components.contract import attempts_file, shared_root, trial_dir
from components.runtime import distributed
from components.runtime.distributed import Topology
from components.runtime.trial import StopSignal

log = logging.getLogger("components.train")


def launch(topo: Topology, argv: Sequence[str], stop: StopSignal, sweep_id: str, tid: str) -> int:
    """This node's ranks of a Python trainer under torchrun; the trial's exit code on this node.

    torchrun runs ``-m components.train`` with ``argv`` less the launcher flags on each rank;
    this process passes SIGTERM on to torchrun (which passes it to the ranks) and maps the end:
    node 0 follows rank 0's end record in ``attempts.jsonl`` (none: rank 0 was killed, 143);
    other nodes 0 when torchrun succeeded, 3/1 when one of their ranks gave up/failed, else 143.
    """
    tdir = trial_dir(shared_root(), sweep_id, tid)
    attempts = attempts_file(tdir)
    offset = attempts.stat().st_size if attempts.exists() else 0
    tail = ["-m", "components.train", *distributed.strip_launcher_flags(argv)]
    cmd = distributed.torchrun_argv(topo, tail, python=sys.executable)
    log.info("node %d of %d: %d ranks under torchrun", topo.node_rank, topo.nnodes,
             topo.nproc_per_node)  # fmt: skip
    started = time.time()
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent)
    forwarded = False
    while True:
        try:
            rc = proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop.requested and not forwarded:
            forwarded = True
            log.info("passing SIGTERM on to torchrun (pid %d)", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    end = distributed.read_attempt_end(attempts, offset)
    failures = [
        int(r.get("code", 1))
        for r in distributed.read_rank_records(tdir, None, ranks=topo.ranks(), since=started)
    ]
    code = distributed.launcher_exit_code(
        node_rank=topo.node_rank, torchrun_rc=rc, stopped=stop.requested, end=end,
        failures=failures,
    )  # fmt: skip
    log.info("torchrun exited %d: node %d exits %d", rc, topo.node_rank, code)
    return code


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

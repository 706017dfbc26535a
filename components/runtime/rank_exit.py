"""How one rank of a distributed command trial ended: ``python -m components.runtime.rank_exit``.

    torchrun --no-python ... python -m components.runtime.rank_exit <trial dir> <attempt> -- prog ...

torchrun reports only that *a* worker failed (exit 1), so a rank killed with its node and a rank
whose program crashed would look the same to the supervisor. This wrapper runs the program as its
child (SIGTERM and SIGINT passed on) and, when the program exits non-zero on its own, leaves the
rank record :func:`components.runtime.distributed.write_rank_record` writes for a Python trainer's
rank; so does a program that dies of a signal of its own making (SIGABRT, SIGSEGV: a library's
teardown can abort a program that meant to exit 7). A rank stopped from outside (SIGTERM, SIGKILL,
SIGINT, SIGHUP), or killed with this wrapper (a lost node), leaves none: the supervisor then
counts a preemption, not an application error. The wrapper exits as its program did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.runtime.distributed import write_rank_record

STOPPED = (128 + signal.SIGTERM, 128 + signal.SIGKILL)  # what a shell reports for a signalled child
# Signals that stop a program from outside (a preemption, a lost node, an operator). Any other
# signal a program dies of (SIGABRT from a library's teardown, SIGSEGV, SIGBUS, SIGFPE) is its
# own failure: an application error, not a preemption.
EXTERNAL = {signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP}


def wrap(tdir: Path, attempt: int, argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """``argv`` run through this wrapper (for ``torchrun --no-python``)."""
    return [python, "-m", "components.runtime.rank_exit", str(tdir), str(attempt), "--", *argv]


def main(args: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    if len(args) < 4 or args[2] != "--":
        print("usage: python -m components.runtime.rank_exit TRIAL_DIR ATTEMPT -- PROGRAM...",
              file=sys.stderr)  # fmt: skip
        return 2
    tdir, attempt, argv = Path(args[0]), int(args[1]), args[3:]
    proc = subprocess.Popen(argv)

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = proc.wait()
    how = own_failure(code)
    if how is not None:
        rank = int(os.environ.get("RANK", "0"))
        write_rank_record(tdir, attempt, rank, 1, f"rank {rank}: {argv[0]} {how}")
    return 128 - code if code < 0 else code


def own_failure(code: int) -> str | None:
    """How a program that failed on its own ended (``exited with 7``, ``died of SIGABRT``), or
    ``None``: it succeeded, or a signal from outside stopped it."""
    if code > 0 and code not in STOPPED:
        return f"exited with {code}"
    if code < 0 and -code not in EXTERNAL:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"died of {name}"
    return None


if __name__ == "__main__":
    sys.exit(main())

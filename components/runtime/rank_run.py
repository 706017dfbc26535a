"""A rank other than 0 of a distributed trial (:mod:`components.runtime.trial_run` runs rank 0).

Rank 0 records the attempt and tells the others, through :class:`Gate`, whether and as which
attempt to train; they train with tracking off and leave a rank record
(:func:`components.runtime.distributed.write_rank_record`) when they fail, so rank 0 can tell a
peer's own error from a lost peer.
"""

from __future__ import annotations

import logging

from components.contract import EXIT_DONE, EXIT_GIVE_UP, EXIT_PREEMPTED, shared_root, trial_dir
from components.contract import EXIT_RETRY as EXIT_APP_ERROR
from components.runtime import distributed
from components.runtime.distributed import Dist
from components.runtime.harness import Harness
from components.runtime.pruning import Pruned
from components.runtime.trial import GiveUp, Preempted, StopSignal
from components.runtime.trial_spec import TrainFn, TrialSpec

log = logging.getLogger("components.train")


class Gate:
    """Rank 0 tells the other ranks, once, the attempt to train (0: none, the trial ends here)."""

    def __init__(self, dist: Dist) -> None:
        self.dist = dist
        self.sent = False

    def open(self, number: int) -> None:
        if self.dist.enabled and not self.sent:
            self.sent = True
            self.dist.broadcast(number)

    def close(self) -> None:
        self.open(0)


class RankAttempt:
    """What a trainer sees of the attempt on a rank other than 0 (rank 0 alone records it)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def progress(self, step: int) -> None:
        pass


def device_type(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_rank(spec: TrialSpec, stop: StopSignal, train: TrainFn, dist: Dist) -> int:
    """A rank other than 0: train with tracking off; exit code, and a rank record on failure."""
    number = int(dist.broadcast(None) or 0)
    if not number:
        return EXIT_DONE  # rank 0 found nothing to train (done, skipped, or it gave up)
    tdir = trial_dir(shared_root(), spec.sweep_id, spec.trial_id)
    harness: Harness | None = None
    code = EXIT_DONE
    try:
        harness = Harness(
            tdir,
            tb_dir=None,
            connect=None,
            keep=spec.keep_checkpoints,
            direction=spec.direction,
            checkpoint_interval=spec.checkpoint_interval,
            stop=stop,
            checkpoint_dir=tdir / spec.checkpoint_dir,
            dist=dist,
            attempt=number,
        )
        train(spec, harness, RankAttempt(number))  # type: ignore[arg-type]
    except Preempted as exc:
        log.warning("rank %d: %s", dist.rank, exc)
        code = EXIT_PREEMPTED
    except Pruned:
        code = EXIT_DONE
    except GiveUp as exc:
        log.error("rank %d gives up: %s", dist.rank, exc)
        distributed.write_rank_record(tdir, number, dist.rank, EXIT_GIVE_UP, str(exc))
        code = EXIT_GIVE_UP
    except Exception as exc:
        if distributed.is_comm_error(exc):
            log.warning("rank %d: a peer is gone: %s", dist.rank, exc)
            return EXIT_PREEMPTED  # (no flush: a collective may hang)
        log.exception("rank %d: application error", dist.rank)
        error = f"{type(exc).__name__}: {exc}"
        distributed.write_rank_record(tdir, number, dist.rank, EXIT_APP_ERROR, error)
        code = EXIT_APP_ERROR
    if harness is not None:
        try:
            harness.close(min(spec.flush_timeout, max(0.5, stop.remaining() - 1.5)))
        except Exception as exc:
            log.warning("rank %d: closing: %s", dist.rank, exc)
    return code

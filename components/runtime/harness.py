"""What a training loop needs to survive spot nodes, in one object: resume, log, checkpoint, stop.

    harness = Harness(trial_dir, tb_dir=..., connect=...)      # loads the newest good checkpoint
    if harness.resumed: restore(harness.resumed.state)         # resume is automatic
    for step in range(harness.start_step + 1, steps + 1):
        if harness.stop.requested:
            harness.preempt(step - 1, state)                   # saves if it fits, raises Preempted
        ...train one step...
        harness.log(step, {"train_loss": loss})
        if harness.checkpoint_due() or step == steps:
            harness.save(step, state())
    harness.close(timeout)

The supervisor (:mod:`components.train`) drives it for every trainer: through
:class:`components.api.Trial` for a Python trainer, through the metrics relay for a command.
It keeps the last value of each logged metric (stored in each checkpoint: the trial's result by
default) and, with a :class:`~components.runtime.pruning.Pruner`, reports the objective to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from components.contract import checkpoints_dir, spool_file
from components.runtime import distributed
from components.runtime.checkpoint import Checkpoint, CheckpointManager
from components.runtime.distributed import Dist
from components.runtime.logger import TrialLogger, scalar
from components.runtime.pruning import Pruner
from components.runtime.sender import MetricSender, points_from_json, read_spool
from components.runtime.spans import SPANS
from components.runtime.trial import Preempted, StopSignal

log = logging.getLogger(__name__)

SAVE_MARGIN_SECONDS = 1.0
SENDER_INTERVAL_SECONDS = 5.0


class Harness:
    """Checkpoints, metrics and SIGTERM handling for one trial.

    Args:
        trial_dir: ``sweeps/<sweep>/trials/<trial>/`` (``checkpoints/`` and the spool go there).
        tb_dir: TensorBoard folder, or None.
        connect: finds or creates the MLflow run, returns ``(client, run_id)``; None: no MLflow.
        keep: checkpoints to keep besides the best.
        direction: whether a lower (``minimize``) or higher metric is the best checkpoint.
        checkpoint_interval: seconds between checkpoints (see :meth:`checkpoint_due`).
        stop: the SIGTERM flag (default: a new one, not installed).
        map_location: where loaded checkpoint tensors go.
        sender_interval: seconds between MLflow batches (the curves in MLflow lag by at most this;
            each batch costs the shared server ~20 ms of CPU before its first point).
        pruner: reports the objective's values to the study (None: no early stopping).
        checkpoint_dir: where checkpoints go (default ``trial_dir/checkpoints``).
        dist: this process's rank in a multi-process trial (default: the only one). With more
            than one rank, checkpoints are sharded
            (:class:`~components.runtime.sharded_checkpoint.ShardedCheckpoints`, a collective:
            every rank builds its harness), and a rank other than 0 tracks nothing (give it no
            ``tb_dir``, ``connect`` or ``pruner``): its :meth:`log` only keeps the last values.
        attempt: the attempt number (names a sharded checkpoint's temporary folder).
    """

    def __init__(
        self,
        trial_dir: Path,
        *,
        tb_dir: Path | None,
        connect: Callable[[], tuple[Any, ...]] | None,
        keep: int = 3,
        direction: str = "minimize",
        checkpoint_interval: float = 60.0,
        stop: StopSignal | None = None,
        map_location: str | torch.device = "cpu",
        sender_interval: float = SENDER_INTERVAL_SECONDS,
        pruner: Pruner | None = None,
        checkpoint_dir: Path | None = None,
        dist: Dist | None = None,
        attempt: int = 1,
    ) -> None:
        self.dist = dist or Dist()
        self.trial_dir = trial_dir
        self.checkpoint_interval = checkpoint_interval
        self.stop = stop or StopSignal()
        self.pruner = pruner
        self.prune_step: int | None = None
        self.on_step: Callable[[int], None] | None = None  # told each step logged
        self.peer_lost = False  # a collective failed: close() does not wait for a checkpoint
        # the spans (components.runtime.spans): when the trainer was called, when the first and
        # the last step were logged, what the trainer timed itself before its first step
        self.trainer_started: float | None = None
        self.first_step_at: float | None = None
        self.last_step_at: float | None = None
        self.trainer_spans = 0.0
        directory = checkpoint_dir or checkpoints_dir(trial_dir)
        self.checkpoints: Any = self._checkpoint_manager(directory, attempt, keep, direction)
        self.resumed: Checkpoint | None = self.checkpoints.load(map_location)
        self.start_step = self.resumed.step if self.resumed else 0
        if self.resumed:
            log.info(
                "resuming from checkpoint %s (step %d)", self.resumed.path.name, self.start_step
            )
        self.spool = spool_file(trial_dir)
        sender = self._sender(connect, sender_interval)
        self.logger = TrialLogger(tb_dir=tb_dir, purge_step=self.start_step + 1, sender=sender)
        self._last_save = time.monotonic()
        self._last: dict[str, float | torch.Tensor] = {}
        if self.resumed is not None:
            self._last.update(self.resumed.extra.get("metrics") or {})

    def _checkpoint_manager(self, directory: Path, attempt: int, keep: int, direction: str) -> Any:
        """One process's checkpoints, or (more than one rank) sharded ones: a collective."""
        if self.dist.enabled:
            from components.runtime.sharded_checkpoint import ShardedCheckpoints

            return ShardedCheckpoints(
                directory, dist=self.dist, attempt=attempt, keep=keep, direction=direction
            )
        return CheckpointManager(directory, keep=keep, direction=direction)

    def _sender(
        self, connect: Callable[[], tuple[Any, ...]] | None, interval: float
    ) -> MetricSender | None:
        """The MLflow sender (None: no MLflow), loaded with what earlier attempts left undelivered:
        the resumed checkpoint's pending points, then the spool."""
        if connect is None:
            return None
        sender = MetricSender(connect, interval=interval)
        if self.resumed is not None:
            sender.add(points_from_json(self.resumed.extra.get("pending_metrics")))
        spooled = read_spool(self.spool)
        if spooled:
            log.info("%d metric points from an earlier attempt to deliver", len(spooled))
            sender.add(spooled)
        return sender

    @property
    def sender(self) -> MetricSender | None:
        return self.logger.sender

    def log(self, step: int, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Log ``metrics`` at ``step`` (non-blocking) and report the objective to the pruner.

        On a rank other than 0 it only keeps the last values (rank 0 alone tracks)."""
        now = time.monotonic()
        if self.first_step_at is None:
            self.first_step_at = now
            SPANS.mark("first_step", now)
            if self.trainer_started is not None:
                SPANS.add("first_step", now - self.trainer_started - self.trainer_spans)
        self.last_step_at = now
        if not self.dist.is_main:
            self._last.update(metrics)
            return
        self.logger.log(step, metrics)
        self._last.update(metrics)
        if self.on_step is not None:
            self.on_step(step)
        pruner = self.pruner
        if (
            pruner is not None
            and pruner.metric in metrics
            and self.prune_step is None
            and pruner.report(step, scalar(metrics[pruner.metric]))
        ):
            log.info("the study prunes this trial at step %d", step)
            self.prune_step = step

    def last_metrics(self) -> dict[str, float]:
        """The last logged value of each metric (the earlier attempts' ones included)."""
        return {k: scalar(v) for k, v in self._last.items()}

    def start_clock(self) -> None:
        """Start the checkpoint interval now (call right before the first training step)."""
        self._last_save = time.monotonic()

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_save >= self.checkpoint_interval

    def decide(self) -> Decision:
        """What this step boundary does, the same on every rank: one all-reduce (MAX) of [stop
        requested on any rank, prune decided by rank 0, checkpoint due on rank 0, the save on
        stop does not fit the grace period on some rank]."""
        stop = self.stop.requested
        if not self.dist.enabled:
            return Decision(stop, self.prune_step is not None, self.checkpoint_due(), None)
        main = self.dist.is_main
        flags = [0, 0, 0, 0]
        flags[distributed.STOP] = int(stop)
        flags[distributed.PRUNE] = int(main and self.prune_step is not None)
        flags[distributed.DUE] = int(main and self.checkpoint_due())
        if stop:
            estimate = self.checkpoints.estimated_save_seconds()
            flags[distributed.NO_FIT] = int(estimate + SAVE_MARGIN_SECONDS > self.stop.remaining())
        got = self.dist.sync_flags(flags)
        return Decision(
            bool(got[distributed.STOP]),
            bool(got[distributed.PRUNE]),
            bool(got[distributed.DUE]),
            not got[distributed.NO_FIT],
        )

    def save(
        self,
        step: int,
        state: Any,
        *,
        extra: Mapping[str, Any] | None = None,
        metric: float | None = None,
        block: bool = False,
    ) -> bool:
        """Checkpoint ``state`` at ``step`` (the write runs in the background unless ``block``)."""
        self.logger.drain()
        doc = {
            "metrics": self.last_metrics(),
            **dict(extra or {}),
            "pending_metrics": [list(p) for p in self.logger.pending()],
        }
        saved = self.checkpoints.save(
            step,
            state,
            extra=doc,
            metric=metric,
            before_commit=self.logger.flush_tensorboard,
            block=block,
        )
        self._last_save = time.monotonic()
        return saved

    def preempt(
        self,
        step: int,
        state: Callable[[], Any],
        *,
        extra: Mapping[str, Any] | None = None,
        metric: float | None = None,
        fits: bool | None = None,
    ) -> NoReturn:
        """Stop at this step boundary: save if the write fits the grace period, raise Preempted.

        ``fits``: the ranks' common answer (:meth:`decide`); None: estimated here."""
        self.checkpoints.wait()
        saved = False
        if step != self.checkpoints.last_saved_step:
            current = state()
            nbytes = _state_bytes(current)
            estimate = self.checkpoints.estimated_save_seconds(nbytes)
            left = self.stop.remaining()
            if fits if fits is not None else estimate + SAVE_MARGIN_SECONDS <= left:
                saved = self.save(step, current, extra=extra, metric=metric, block=True)
            else:
                log.warning(
                    "not saving step %d: the write takes ~%.1fs, %.1fs of grace left",
                    step,
                    estimate,
                    left,
                )
        raise Preempted(f"preempted at step {step} ({'saved' if saved else 'not saved'})")

    def close(self, timeout: float) -> int:
        """Finish the checkpoint write, flush TensorBoard and MLflow (bounded); undelivered count.

        The last points go to MLflow while the last checkpoint is still being written: a trial's
        exit waits for the longer of the two, not for both one after the other.
        """
        first, last = self.first_step_at, self.last_step_at
        if first is not None and last is not None and SPANS.get("train") is None:
            SPANS.add("train", last - first)
        if self.sender is not None:
            self.sender.hurry()
        try:
            if not self.peer_lost:
                self.checkpoints.wait()
        finally:
            left = self.logger.close(timeout, spool=self.spool)
        return left


@dataclass(frozen=True)
class Decision:
    """What one step boundary does (:meth:`Harness.decide`)."""

    stop: bool
    prune: bool
    checkpoint_due: bool
    save_fits: bool | None  # on stop, every rank's answer; None: a 1-process trial decides later


def _state_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_state_bytes(v) for v in state)
    return 0

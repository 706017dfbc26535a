"""The trial-side logger: one call per step, TensorBoard and MLflow fed from a background thread.

``TrialLogger.log(step, {"train_loss": loss})`` costs the training loop a queue put: GPU scalars
are copied to the host without a sync (the copy is awaited in the background), and the background
thread writes TensorBoard scalars (:class:`~components.runtime.tbevents.EventFile`, one event per
step) and hands the points to the :class:`MetricSender`.

TensorBoard: each attempt opens a new event file with ``purge_step`` = the first step not covered
by the checkpoint (``checkpoint step + 1``; steps count completed optimizer updates, so step ``k``
is logged after the k-th update), so TensorBoard drops whatever a killed attempt wrote after its
last checkpoint and each step reads back exactly once. Final metrics go to the HParams dashboard via the hparams plugin.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from components.runtime.sender import MetricSender, Point
from components.runtime.tbevents import EventFile, hparams_summaries

log = logging.getLogger(__name__)
PUMP_INTERVAL = 0.05  # seconds between the pump's batches (TensorBoard and MLflow lag by as much)

_STOP = object()


class TrialLogger:
    """Logs a trial's metrics to TensorBoard (``tb_dir``) and MLflow (``sender``), either optional.

    Args:
        tb_dir: ``tensorboard/<sweep>/<trial>/``; None: no TensorBoard.
        purge_step: first step this attempt will log (older events at or after it are dropped).
        sender: the MLflow sender; None: no MLflow.
    """

    def __init__(
        self, *, tb_dir: Path | None, purge_step: int, sender: MetricSender | None
    ) -> None:
        self.sender = sender
        self.writer = EventFile(tb_dir, purge_step=purge_step) if tb_dir is not None else None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, name="metrics-pump", daemon=True)
        self._thread.start()
        self.last: dict[str, float] = {}

    def log(self, step: int, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Record ``metrics`` at ``step`` (never blocks on the GPU or the network)."""
        values: dict[str, Any] = {}
        event = None
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if value.is_cuda:
                    value = value.to("cpu", non_blocking=True)
                    if event is None:
                        event = torch.cuda.Event()
                values[key] = value
            else:
                values[key] = float(value)
        if event is not None:
            event.record()
        self._queue.put((step, int(time.time() * 1000), values, event))

    def drain(self) -> None:
        """Wait until every logged point has reached TensorBoard's writer and the sender."""
        self._queue.join()
        if self._error is not None:
            raise RuntimeError(f"metrics logging failed: {self._error}") from self._error

    def pending(self) -> list[Point]:
        """Points not yet delivered to MLflow (call after :meth:`drain`)."""
        return self.sender.pending() if self.sender is not None else []

    def flush_tensorboard(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """Write the HParams plugin's summaries (the metrics themselves are logged as scalars)."""
        if self.writer is None:
            return
        clean = {
            k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in hparams.items()
        }
        self.drain()
        for summary in hparams_summaries(clean, dict(metrics)):
            self.writer.summary(summary, step)

    def close(self, timeout: float, spool: Path | None = None) -> int:
        """Flush TensorBoard, deliver MLflow points (bounded wait); returns how many are undelivered."""
        self._queue.put(_STOP)
        self._thread.join(timeout=max(timeout, 1.0))
        if self.writer is not None:
            self.writer.close()
        if self.sender is None:
            return 0
        return self.sender.close(timeout, spool=spool)

    def _pump(self) -> None:
        """Write what was logged, a batch at a time: after each batch the thread sleeps
        :data:`PUMP_INTERVAL` seconds, so it wakes at most that often however often the trainer
        logs (a wake-up per ``log`` call was most of the harness's CPU per step)."""
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            points: list[tuple[str, float, int, int]] = []
            for item in batch:
                if item is _STOP:
                    break
                try:
                    points += self._write(item)
                except BaseException as exc:  # reported to the training loop by drain()
                    log.exception("metrics pump failed")
                    self._error = exc
            try:
                if points and self.sender is not None:
                    self.sender.add(points)  # one hand-over a batch
            except BaseException as exc:
                log.exception("metrics pump failed")
                self._error = exc
            finally:
                for _ in batch:
                    self._queue.task_done()
            if any(item is _STOP for item in batch):
                return
            time.sleep(PUMP_INTERVAL)

    def _write(self, item: Any) -> list[tuple[str, float, int, int]]:
        """One logged step to TensorBoard; its points for MLflow."""
        step, ts, values, event = item
        if event is not None:
            event.synchronize()
        floats = {k: scalar(v) for k, v in values.items()}
        self.last.update(floats)
        if self.writer is not None:
            self.writer.scalars(step, floats, walltime=ts / 1000)
        return [(k, v, ts, step) for k, v in floats.items()]


def scalar(value: Any) -> float:
    """A metric as a float: a tensor is detached first (no autograd warning, no graph kept)."""
    detach = getattr(value, "detach", None)
    return float(detach() if detach is not None else value)

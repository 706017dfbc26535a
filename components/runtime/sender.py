"""Background delivery of a trial's metrics to MLflow: batched, exactly once, never blocking.

Points are kept in order in memory. A single thread sends them with MLflow's ``log_batch``
(up to 1,000 per request) and removes them only once the server has answered. Before its first
send, and again after any failed request, it asks the server for the last step already logged for
each metric and drops every point at or below it: a point whose request timed out after the server
had stored it, or a step recomputed after resuming from a checkpoint, is never logged twice.

A server that is down or refusing never stops training: the thread backs off and tries again.
:meth:`MetricSender.pending` gives the undelivered points (saved inside each checkpoint), and
:meth:`MetricSender.close` writes what is still undelivered at exit to a spool file that the next
attempt (or :func:`deliver_spool`) sends first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from components.fsio import atomic_write_lines

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # MLflow's log_batch limit for metrics
Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step


class MetricSender:
    """Delivers metric points of one run in the background.

    Args:
        connect: called in the sender thread until it succeeds; returns ``(client, run_id)``
            (e.g. finds or creates the trial's run), or ``(client, run_id, last steps)`` when it
            read the run's last logged step of each metric on the way. Exceptions mean "server
            not there yet". The client is an ``MlflowClient`` or a
            :class:`~components.runtime.mlflow_rest.RestClient`.
        interval: seconds between sends while points trickle in.
        max_backoff: longest pause between tries while the server is unreachable.
    """

    def __init__(
        self,
        connect: Callable[[], tuple[Any, ...]],
        *,
        interval: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._connect = connect
        self.interval = interval
        self.max_backoff = max_backoff
        self._queue: deque[Point] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._flushing = 0
        self._hurry = False  # the trial is ending: send what is queued without the interval
        self._client: Any = None
        self.run_id: str | None = None
        self._watermark: dict[str, int] | None = None  # None: must (re)read from the server
        self.delivered = 0
        self.skipped = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="mlflow-sender", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- producer side

    def add(self, points: Iterable[Point]) -> None:
        with self._cond:
            before = len(self._queue)
            self._queue.extend(points)
            if before < MAX_BATCH <= len(self._queue):
                self._cond.notify_all()

    def pending(self) -> list[Point]:
        """The points not yet delivered, oldest first (a copy)."""
        with self._cond:
            return list(self._queue)

    def flush(self, timeout: float) -> bool:
        """Send everything now; wait at most ``timeout`` seconds. True when nothing is pending."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.1))
                return not self._queue
            finally:
                self._flushing -= 1

    def hurry(self) -> None:
        """Stop waiting ``interval`` between batches (non-blocking): the trial is ending, so its
        last points go out while it finishes other work, such as its last checkpoint."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()

    def close(self, timeout: float, spool: Path | None = None) -> int:
        """Flush (bounded), stop the thread and persist what is left; returns how many are left."""
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, timeout))
        left = self.pending()
        if spool is not None:
            write_spool(spool, left)
        if left:
            log.warning(
                "%d metric points not delivered to MLflow (%s)%s",
                len(left),
                self.last_error or "server unreachable",
                f"; kept in {spool} for the next attempt" if spool else "",
            )
        return len(left)

    @property
    def connected(self) -> bool:
        return self.run_id is not None

    @property
    def client(self) -> Any:
        """The MLflow client of :attr:`run_id` (None until the sender has connected)."""
        return self._client

    def log_tags(self, tags: Mapping[str, str]) -> bool:
        """Set ``tags`` on the run, in one synchronous request; False when not connected yet.

        Raises:
            Exception: the request failed (the caller decides whether that matters).
        """
        client, run_id = self._client, self.run_id
        if client is None or run_id is None:
            return False
        from components.runtime.tracking import log_batch

        log_batch(client, run_id, tags=tags)
        return True

    # ----------------------------------------------------------------- sender thread

    def _loop(self) -> None:
        backoff = 0.2
        while True:
            with self._cond:
                if self._stop:
                    return
                if (
                    self._client is not None
                    and not self._flushing
                    and len(self._queue) < MAX_BATCH
                    and not (self._hurry and self._queue)
                ):
                    self._cond.wait(self.interval)  # let points accumulate into one batch
                if self._stop:
                    return
            try:
                self._step()
                backoff = 0.2
            except Exception as exc:  # the server is down, refusing, or timed out
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self._watermark = None
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("MLflow not reachable (try %d): %s", self.failures, self.last_error)
                with self._cond:
                    if not self._stop:
                        self._cond.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _step(self) -> None:
        from components.runtime.tracking import log_batch, logged_steps

        if self._client is None:
            # (client, run id) or (client, run id, the run's last logged steps: no second request)
            got = self._connect()
            self._client, self.run_id = got[0], got[1]
            if len(got) > 2:
                self._watermark = dict(got[2])
            log.info("tracking to MLflow run %s", self.run_id)
        assert self._client is not None and self.run_id is not None
        if self._watermark is None:
            self._watermark = logged_steps(self._client, self.run_id)
        with self._cond:
            batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
        if not batch:
            return
        send, marks = self._select(batch)
        if send:
            log_batch(self._client, self.run_id, metrics=send)
        self._watermark.update(marks)
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            self._cond.notify_all()
        self.delivered += len(send)
        self.skipped += len(batch) - len(send)

    def _select(self, batch: list[Point]) -> tuple[list[Point], dict[str, int]]:
        """The points of ``batch`` after each metric's last logged step (first one per step wins)."""
        assert self._watermark is not None
        marks = dict(self._watermark)
        send = []
        for point in batch:
            key, _, _, step = point
            if step > marks.get(key, -(2**62)):
                send.append(point)
                marks[key] = step
        return send, marks


# --------------------------------------------------------------------------- spool files


def write_spool(path: Path, points: list[Point]) -> None:
    """Persist undelivered points atomically (or remove the spool when there are none)."""
    if not points:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    atomic_write_lines(path, (json.dumps(list(point)) + "\n" for point in points))


def read_spool(path: Path) -> list[Point]:
    """Points from a spool file (a torn last line, from a kill mid-write, is ignored)."""
    points: list[Point] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return points
    for line in lines:
        try:
            key, value, ts, step = json.loads(line)
        except ValueError:
            log.warning("ignoring a damaged line in %s", path)
            continue
        points.append((str(key), float(value), int(ts), int(step)))
    return points


def points_from_json(items: Any) -> list[Point]:
    return [(str(k), float(v), int(ts), int(s)) for k, v, ts, s in items or []]


def deliver_spool(path: Path, connect: Callable[[], tuple[Any, ...]], timeout: float) -> int:
    """Send a spool file's points (bounded wait); returns how many are still undelivered."""
    points = read_spool(path)
    if not points:
        return 0
    sender = MetricSender(connect)
    sender.add(points)
    return sender.close(timeout, spool=path)


def set_run_status(sender: MetricSender | None, status: str) -> bool:
    """Mark the sender's run FINISHED/FAILED/KILLED (one try; False when the server is not there)."""
    client = sender.client if sender is not None else None
    if sender is None or client is None or sender.run_id is None:
        return False
    try:
        client.set_terminated(sender.run_id, status)
    except Exception as exc:
        log.warning("could not set MLflow run %s to %s: %s", sender.run_id, status, exc)
        return False
    return True

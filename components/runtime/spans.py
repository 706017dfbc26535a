"""Where a trial's seconds go: named phase durations, from the process's start to its exit.

The supervisor records the phases of an attempt in :data:`SPANS` (the process's recorder):
``imports`` (the process's start, read from ``/proc``, until the supervisor runs the attempt),
``setup`` (attempt record, trainer import, params, harness and checkpoint load), ``first_step``
(the trainer's call until its first logged step, less what the trainer timed itself, such as
``data``), ``train``, and on the way out ``hparams``, ``final_checkpoint``, ``model`` (the model
folder, TorchScript included), ``flush`` (TensorBoard and MLflow), ``end`` (the run's status,
``result.json``). ``mlflow`` is the run's lookup or creation, in the sender's thread (off the
critical path unless the exit waits for it). The attempt's end record in ``attempts.jsonl`` keeps
them (``spans``), the trial's log prints them in one line, ``make status`` shows them.

Only the standard library: it is imported before anything heavy, to time the imports.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from components.phases import ORDER, format_spans

__all__ = ["ORDER", "SPANS", "Spans", "format_spans", "process_age"]


def process_age() -> float:
    """Seconds since this process started (its ``starttime`` in ``/proc/self/stat``), else 0."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        # fields after the command (in parentheses, may hold spaces): state is field 3
        fields = stat[stat.rindex(")") + 2 :].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Spans:
    """Named durations (seconds), summed when a name repeats, in the order first recorded.

    Args:
        origin: the ``time.monotonic()`` of time zero (default: this process's start).
    """

    def __init__(self, origin: float | None = None) -> None:
        self.origin = time.monotonic() - process_age() if origin is None else origin
        self._lock = threading.Lock()
        self._spans: dict[str, float] = {}
        self._marks: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._spans[name] = self._spans.get(name, 0.0) + max(0.0, seconds)

    def count(self, name: str, n: int) -> None:
        """Record a count (requests, say): printed as a number, not seconds."""
        with self._lock:
            self._counts[name] = n

    def since(self, name: str, start: float) -> float:
        """Record the time from ``start`` (a ``time.monotonic()``) until now; returns now."""
        now = time.monotonic()
        self.add(name, now - start)
        return now

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.since(name, start)

    def mark(self, name: str, when: float | None = None) -> float:
        """Remember a moment (seconds after time zero; kept once: the first mark wins)."""
        at = (time.monotonic() if when is None else when) - self.origin
        with self._lock:
            self._marks.setdefault(name, at)
            return self._marks[name]

    def get(self, name: str) -> float | None:
        with self._lock:
            return self._spans.get(name)

    def marked(self, name: str) -> float | None:
        with self._lock:
            return self._marks.get(name)

    def as_dict(self) -> dict[str, float | int]:
        """Durations, the marks (``<mark>_at``: seconds after the process's start), the counts."""
        with self._lock:
            out: dict[str, float | int] = {k: round(v, 3) for k, v in self._spans.items()}
            out.update({f"{k}_at": round(v, 3) for k, v in self._marks.items()})
            out.update(self._counts)
        return out

    def line(self) -> str:
        return format_spans(self.as_dict())

    def reset(self, origin: float | None = None) -> None:
        """Start over (tests; a process that runs several attempts)."""
        with self._lock:
            self._spans.clear()
            self._marks.clear()
            self._counts.clear()
            if origin is not None:
                self.origin = origin


SPANS = Spans()  # this process's: time zero is its start

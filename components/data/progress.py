"""Download progress: a rich progress bar in a terminal, plain log lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from components.data.storage import Progress, human_size

log = logging.getLogger("sweepyard.fetch")


class LogProgress:
    """Logs bytes, objects and rate at most every ``interval`` seconds, and once at the end."""

    def __init__(self, label: str, total_bytes: int, total_objects: int, interval: float = 5.0):
        self.label = label
        self.total_bytes = total_bytes
        self.total_objects = total_objects
        self.interval = interval
        self.bytes = 0
        self.objects = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()

    def advance(self, nbytes: int, objects: int = 1) -> None:
        with self._lock:
            self.bytes += nbytes
            self.objects += objects
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.label}: {self.objects}/{self.total_objects} objects, "
            f"{human_size(self.bytes)}/{human_size(self.total_bytes)}, {human_size(self.bytes / elapsed)}/s"
        )


class RichProgress:
    """A live bar (bytes, objects, rate) on a terminal."""

    def __init__(self, label: str, total_bytes: int, total_objects: int, stream: TextIO):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        self.total_objects = total_objects
        self.objects = 0
        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TextColumn("{task.fields[objects]}/{task.fields[total_objects]} objects"),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
        )
        self._task = self._bar.add_task(
            label, total=total_bytes, objects=0, total_objects=total_objects
        )
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def advance(self, nbytes: int, objects: int = 1) -> None:
        with self._lock:
            self.objects += objects
            self._bar.update(self._task, advance=nbytes, objects=self.objects)


@contextlib.contextmanager
def progress_for(
    label: str, total_bytes: int, total_objects: int, stream: TextIO | None = None
) -> Iterator[Progress]:
    """The progress reporter that suits ``stream`` (stderr by default)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        with RichProgress(label, total_bytes, total_objects, stream) as bar:
            yield bar
        return
    reporter = LogProgress(label, total_bytes, total_objects)
    log.info("%s: fetching %d objects, %s", label, total_objects, human_size(total_bytes))
    yield reporter
    log.info("%s", reporter.line())

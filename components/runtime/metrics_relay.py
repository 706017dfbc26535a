"""A program's metrics file (``SWEEPYARD_METRICS``, JSON lines of ``{"step": N, "<metric>": x}``)
tailed and relayed to the harness, each (metric, step) once across attempts."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from components.runtime.harness import Harness

log = logging.getLogger("components.train")


class MetricsRelay:
    """Tails the program's metrics file and logs each (metric, step) once through the harness.

    The file lives on the shared disk across attempts: each attempt reads it from the start (the
    sender drops steps MLflow already has, TensorBoard's purge drops the earlier attempt's events),
    and a step the resumed program writes again is skipped.
    """

    def __init__(self, path: Path, harness: Harness) -> None:
        self.path = path
        self.harness = harness
        self.offset = 0
        self.last: dict[str, int] = {}
        self.bad_lines = 0
        self.progress: Callable[[int], None] | None = None  # told each step read from now on

    @property
    def step(self) -> int:
        """The highest step relayed."""
        return max(self.last.values(), default=0)

    def pump(self) -> None:
        """Relay the complete lines appended since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in chunk[: end + 1].splitlines():
            if line.strip():
                self._relay(line)

    def _relay(self, line: bytes) -> None:
        try:
            rec = json.loads(line)
            step = rec["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise ValueError(f"step must be an integer, got {step!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.bad_lines += 1
            if self.bad_lines <= 3:
                log.warning("%s: skipping a line that is not a metrics record: %s", self.path, exc)
            return
        if self.progress is not None:
            self.progress(step)
        new = {
            k: float(v)
            for k, v in rec.items()
            if k != "step"
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and step > self.last.get(k, -1)
        }
        if new:
            self.harness.log(step, new)
            self.last.update(dict.fromkeys(new, step))

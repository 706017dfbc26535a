"""What a command trainer's program emits, collected into the trial's metric record.

A program that knows nothing of sweepyard prints ``loss=0.5``, writes TensorBoard events or a
metrics file. :class:`Collection` reads those sources (``trainer.collect``, parsed by
:mod:`components.collect` and followed by :mod:`components.runtime.collectors`) while the program
runs, gives each reading its step (the step the program printed or the event's step; otherwise the
n-th value of that metric in this attempt) and appends it to the trial's ``collected.jsonl``, which
the supervisor's metrics relay tails like the ``SWEEPYARD_METRICS`` file: every (metric, step) reaches
MLflow and TensorBoard once, and a later attempt replays what earlier ones collected.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from components.collect import LineParser, Reading, parse_json_record
from components.runtime.collectors import TensorBoardTail, TextTail

log = logging.getLogger("components.train")

NAME_VALUE = "name=value"


class Collection:
    """The sources of ``trainer.collect`` for one attempt of a program.

    Args:
        spec: the ``trainer.collect`` mapping (None: nothing but the ``SWEEPYARD_METRICS`` file).
        work: the trial's working folder (relative source paths are in it).
        out: the ``collected.jsonl`` file readings are appended to.
        progress: told the step of every reading this attempt makes (the attempt's progress).
    """

    def __init__(
        self,
        spec: Mapping[str, Any] | None,
        work: Path,
        out: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        spec = spec or {}
        self.out = out
        self.progress = progress
        self.stdout = LineParser.from_spec(spec["stdout"]) if "stdout" in spec else None
        file = spec.get("file")
        self.file_spec = file
        self.file: TextTail | None = None
        self.file_parser: LineParser | None = None
        if file is not None:
            self.file = TextTail(work / file["path"])
            if file.get("format", "text") == "text":
                self.file_parser = LineParser.from_spec(file.get("regex", NAME_VALUE))
        self.tb_folder = work / spec["tensorboard"] if "tensorboard" in spec else None
        self.tb = TensorBoardTail(self.tb_folder) if self.tb_folder is not None else None
        only = spec.get("only")  # the trainer's declared metrics: the rest of `name=value` is noise
        self.only = set(only) if only else None
        self.counts: dict[str, int] = {}
        self.seen: set[str] = set()
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.readers: list[threading.Thread] = []
        _end_torn_line(out)

    @property
    def pipes_output(self) -> bool:
        """Whether the program's stdout and stderr must come through the supervisor."""
        return self.stdout is not None

    def attach(self, stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> None:
        """Read the program's piped output: each line is echoed to ours and parsed."""
        for pipe, echo in ((stdout, sys.stdout), (stderr, sys.stderr)):
            if pipe is not None:
                t = threading.Thread(target=self._read, args=(pipe, echo), daemon=True)
                t.start()
                self.readers.append(t)

    def _read(self, pipe: IO[bytes], echo: IO[str]) -> None:
        for raw in iter(pipe.readline, b""):
            target = getattr(echo, "buffer", None)
            if target is not None:
                target.write(raw)
                target.flush()
            text = raw.decode("utf-8", errors="replace")
            for part in text.replace("\r", "\n").splitlines():  # progress bars redraw with \r
                self.lines.put(part)
        pipe.close()

    def pump(self) -> None:
        """Collect what every source emitted since the last call."""
        readings: list[Reading] = []
        if self.stdout is not None:
            while True:
                try:
                    readings += self.stdout.parse(self.lines.get_nowait())
                except queue.Empty:
                    break
        if self.file is not None:
            for line in self.file.poll():
                if self.file_parser is not None:
                    readings += self.file_parser.parse(line)
                else:
                    readings += parse_json_record(line)
        if self.tb is not None:
            readings += self.tb.poll()
        if readings:
            self._append(readings)

    def finish(self, timeout: float = 5.0) -> None:
        """After the program ended: read its last output, then collect it."""
        for t in self.readers:
            t.join(timeout)
        self.pump()

    def _append(self, readings: list[Reading]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for r in readings:
            if self.only is not None and r.name not in self.only:
                continue
            if r.step is None:
                step = self.counts[r.name] = self.counts.get(r.name, 0) + 1
            else:
                step = r.step
            by_step.setdefault(step, {})[r.name] = r.value
            self.seen.add(r.name)
        if not by_step:
            return
        with open(self.out, "a", encoding="utf-8") as f:
            for step, values in by_step.items():
                f.write(json.dumps({"step": step, **values}) + "\n")
        if self.progress is not None:
            for step in by_step:
                self.progress(step)

    def missing(self, metric: str) -> str:
        """Why ``metric`` was never collected: the sources that were looked at."""
        where = []
        if self.stdout is not None:
            where.append(f"no printed line matched {self.stdout.pattern_for(metric) or 'a regex'}")
        if self.file_spec is not None and self.file is not None:
            where.append(f"the file {self.file_spec['path']!r} gave none")
        if self.tb_folder is not None:
            where.append(f"no TensorBoard event under {self.tb_folder} has the tag {metric!r}")
        where.append("nothing in $SWEEPYARD_METRICS")
        return f"metric {metric!r} was never collected: {'; '.join(where)}"


def _end_torn_line(path: Path) -> None:
    """An attempt killed mid-write left a partial last line: end it, so the next one stands alone."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, 2)
            if f.tell() and (f.seek(-1, 2), f.read(1))[1] != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)

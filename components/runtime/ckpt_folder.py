"""What both checkpoint managers (one process: :mod:`.checkpoint`; sharded: :mod:`.sharded_checkpoint`)
do alike with their folder: ``step-<9 digits>/`` folders, the ``LATEST`` pointer, the temporaries a
killed save leaves, and keeping the last ``keep`` and the best (by the metric of each folder's
``MANIFEST.json``)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
from pathlib import Path

from components.contract import LATEST_FILE as LATEST
from components.contract import MANIFEST_FILE as MANIFEST

DIR_RE = re.compile(r"^step-(\d{9,})$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or none of the existing ones could be loaded."""


class CheckpointFolder:
    """A trial's checkpoint folder; subclasses set ``directory``, ``keep`` and ``direction``."""

    directory: Path
    keep: int
    direction: str
    _thread: threading.Thread | None
    _error: BaseException | None

    def wait(self) -> None:
        """Wait for the background write (and its commit); re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"checkpoint write failed: {err}") from err

    @property
    def writing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def list(self) -> list[tuple[int, Path]]:
        """Checkpoint folders on disk (verified or not), newest step first."""
        found = []
        for p in self.directory.iterdir():
            m = DIR_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def latest_pointer(self) -> Path | None:
        try:
            name = (self.directory / LATEST).read_text().strip()
        except OSError:
            return None
        return self.directory / name if DIR_RE.match(name) else None

    def _clean_temporaries(self) -> None:
        for p in self.directory.iterdir():
            if p.name.startswith((".tmp-", ".old-", f".{LATEST}.tmp")):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def _prune(self) -> None:
        """Keep the newest ``keep``, the best by metric and the one ``LATEST`` names."""
        entries = self.list()
        keep = {p for _, p in entries[: self.keep]}
        best: tuple[float, Path] | None = None
        for _, p in entries:
            try:
                metric = json.loads((p / MANIFEST).read_text()).get("metric")
            except (OSError, ValueError):
                continue
            if metric is None or metric != metric:  # None or NaN
                continue
            key = metric if self.direction == "minimize" else -metric
            if best is None or key < best[0]:
                best = (key, p)
        if best is not None:
            keep.add(best[1])
        pointer = self.latest_pointer()
        if pointer is not None:
            keep.add(pointer)
        for _, p in entries:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)

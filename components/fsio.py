"""Durable writes on the shared disk: a reader sees the old file or the new one, never a torn one.

Pure standard library (no torch), so every component and the plan step can use it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path`` (a plot's ``savefig``, ``torch.save``);
    then fsync it, rename it over ``path`` and fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` to a temporary file beside ``path``, fsync, rename over it, fsync the folder."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)

    atomic_write_with(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_lines` of one string."""
    atomic_write_lines(path, [text])


def atomic_write_json(path: Path, doc: Any, *, indent: int | None = 2) -> None:
    """``doc`` as JSON (sorted keys, trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(doc, indent=indent, sort_keys=True) + "\n")

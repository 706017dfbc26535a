"""The problem record every validation layer reports, and how it names a field."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: Iterable[str | int]) -> str:
    """``("spec", "templates", 3, "retryStrategy")`` -> ``spec.templates[3].retryStrategy``.

    Keys that are not plain identifiers (label keys such as ``cloud.google.com/gke-spot``) are
    quoted: ``nodeSelector["cloud.google.com/gke-spot"]``. The document's root is ``(root)``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out or "(root)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest.

    Attributes:
        path: the offending field, e.g. ``spec.templates[3].retryStrategy.retryPolicy``.
        message: what is wrong with it, in words a user can act on.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def problem(path: Iterable[str | int], message: str) -> Problem:
    """A :class:`Problem` at a path given as parts."""
    return Problem(format_path(path), message)

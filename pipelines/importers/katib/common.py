"""What every part of a Katib conversion shares: its error, the accumulator of its problems and
notes, and readers of the YAML values an Experiment holds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")


class KatibImportError(ValueError):
    """An Experiment that cannot become a sweep; ``problems`` are ``(Katib field path, why)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"  {path or '(file)'}: {why}" for path, why in self.problems))


@dataclass
class Context:
    """What one conversion has found so far, in the order it found it.

    Every part of the conversion checks its fields and records here rather than raising, so that
    all the fields that cannot map are reported together.

    Attributes:
        problems: ``(Katib field path, why)`` of each field that cannot map.
        notes: ``"<Katib field path>: <text>"`` for the user (a renamed param, a dropped setting).
    """

    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, path: str, why: str) -> None:
        """Record that the field at ``path`` cannot map, and why."""
        self.problems.append((path, why))

    def note(self, path: str, text: str) -> None:
        """Tell the user what became of the field at ``path``."""
        self.notes.append(f"{path}: {text}")


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (a missing or malformed block)."""
    return value if isinstance(value, Mapping) else {}


def scalar_text(value: Any) -> str:
    """A YAML scalar as Katib would hold it (a string): ``0.5`` -> ``"0.5"``, ``True`` -> ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

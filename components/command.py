"""A command trainer's argv: ``{name}`` placeholders filled with the trial's params.

Shared by the config check (``pipelines/config.py``: every placeholder must be a param of the
space) and the supervisor (which fills them); imports nothing heavy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Placeholders the supervisor fills with the trial's places (no param may take these names).
RESERVED = frozenset({"data", "checkpoint_dir", "model_dir", "trial_id", "workdir"})


def placeholders(arg: str) -> list[str]:
    """The param names ``arg`` refers to, in order."""
    return PLACEHOLDER.findall(arg)


def format_value(value: Any) -> str:
    """A param as a command-line word: strings as they are, anything else as JSON (``0.1``, ``true``)."""
    return value if isinstance(value, str) else json.dumps(value)


def fill_command(argv: Iterable[str], params: Mapping[str, Any]) -> list[str]:
    """Replace each ``{name}`` by the trial's value of ``name``.

    Raises:
        KeyError: a placeholder names no param (the message names it).
    """

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise KeyError(f"placeholder {{{name}}} names no trial param")
        return format_value(params[name])

    return [PLACEHOLDER.sub(sub, arg) for arg in argv]

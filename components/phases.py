"""A trial's phases (imports, first step, ..., exit) in the order they happen, and how their spans
print: one line in the trial's log and in ``make status``. Pure: the spans themselves are measured
by :mod:`components.runtime.spans`, and ``pipelines/`` reads them from ``attempts.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# the order the phases happen in (a record's keys may come sorted); any other name follows
ORDER = ("imports", "setup", "data", "first_step", "first_step_at", "train", "model", "hparams",
         "final_checkpoint", "flush", "end", "exit", "mlflow", "mlflow_requests")  # fmt: skip


def format_spans(spans: Mapping[str, Any], *, sep: str = ", ") -> str:
    """``imports 1.20s, setup 0.31s, ..., mlflow_requests 5`` in :data:`ORDER` (durations are
    floats, counts ints; anything else is skipped)."""
    parts = []
    names = [n for n in ORDER if n in spans] + [n for n in spans if n not in ORDER]
    for name in names:
        value = spans[name]
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            parts.append(f"{name} {value}")
        elif isinstance(value, float):
            parts.append(f"{name} {value:.2f}s")
    return sep.join(parts)

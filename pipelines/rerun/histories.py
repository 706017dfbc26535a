"""Two runs' metric histories, step by step and bit for bit."""

from __future__ import annotations

import struct
from typing import Any


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def compare_histories(
    client: Any, origin: str, new: str, since: int | None = None
) -> tuple[list[str], int, bool]:
    """One line per metric of the origin run: the two histories, step by step, bit for bit
    (only the steps after ``since`` when given); the points compared; whether all were equal."""
    lines, compared, identical = [], 0, True
    for key in sorted(client.get_run(origin).data.metrics):
        before, after = (
            {m.step: float(m.value) for m in client.get_metric_history(run, key)
             if since is None or m.step > since}
            for run in (origin, new)
        )  # fmt: skip
        line, same = compare_metric(key, before, after)
        lines.append(line)
        compared += len(set(before) | set(after))
        identical = identical and same
    return lines, compared, identical


def compare_metric(key: str, before: dict[int, float], after: dict[int, float]) -> tuple[str, bool]:
    """``key: identical (N steps)``, or ``key: differs: ...`` (the largest difference and its step,
    and the steps only one of the runs has)."""
    common = sorted(set(before) & set(after))
    differing = [s for s in common if _bits(before[s]) != _bits(after[s])]
    missing, extra = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    if not differing and not missing and not extra:
        return f"{key}: identical ({_steps(len(common))})", True
    parts = []
    if differing:
        gaps = {s: abs(before[s] - after[s]) for s in differing}
        worst = max(differing, key=lambda s: (gaps[s] if gaps[s] == gaps[s] else float("inf"), -s))
        parts.append(f"largest difference {gaps[worst]:.2g} at step {worst}")
    elif common:
        are = "is" if len(common) == 1 else "are"
        parts.append(f"the {_steps(len(common))} both have {are} identical")
    if missing:
        parts.append(f"{_steps(len(missing))} missing in the rerun ({_span(missing)})")
    if extra:
        parts.append(f"{_steps(len(extra))} only in the rerun ({_span(extra)})")
    return f"{key}: differs: {'; '.join(parts)}", False


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _span(steps: list[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"

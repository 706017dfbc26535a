"""The config's ``search.space`` of the checked parameters: a grid of every value for Katib's grid,
else sampled ranges and lists, with the parameters that hold a single value fixed."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from pipelines.importers.katib.common import Context
from pipelines.importers.katib.params import Param


def space(
    ctx: Context,
    params: list[Param],
    method: str,
    max_trials: int | None,
    seed: int | None,
    resource: tuple[str, Any] | None,
) -> tuple[dict[str, Any], int | None]:
    """``search.space``, and ``max_trials`` (a grid without one runs all its points).

    Args:
        ctx: the conversion's problems and notes.
        params: the parameters that mapped.
        method: sweepyard's algorithm.
        max_trials: Katib's ``maxTrialCount`` (None: not given).
        seed: the algorithm's seed (random's goes in its space).
        resource: hyperband's resource parameter (its Katib name) and the value it is fixed at.
    """
    grid, ranges, fixed = _sort(ctx, params, method, resource)
    out: dict[str, Any] = {}
    if method == "grid":
        size = math.prod(len(v) for v in grid.values()) if grid else 0
        if max_trials is None:
            max_trials = size
        elif size > max_trials:
            ctx.refuse(
                "spec.maxTrialCount",
                f"Katib's grid runs {max_trials} of its {size} points (in a random order); "
                f"sweepyard's grid runs every point: set maxTrialCount to {size}, or use "
                "algorithm random",
            )
        out["grid"] = grid
    else:
        out["random"] = _sampled(ctx, params, ranges, method, max_trials, seed)
    if fixed:
        out["fixed"] = fixed
    return out, max_trials


def _sort(
    ctx: Context, params: list[Param], method: str, resource: tuple[str, Any] | None
) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Each param's grid values (``method`` grid), or its range or list to sample; and the
    params fixed at one value."""
    grid: dict[str, list[Any]] = {}
    ranges: dict[str, dict[str, Any]] = {}
    fixed: dict[str, Any] = {}
    for p in params:
        if resource is not None and p.katib == resource[0]:
            fixed[p.name] = resource[1]  # hyperband's resource: each trial's full budget
            continue
        if method == "grid":
            values = _grid_values(ctx, p)
            if values is not None:
                grid[p.name] = values
            continue
        dist = _distribution(ctx, p)
        if dist is None:
            continue
        if "fixed" in dist:
            fixed[p.name] = dist["fixed"]
        else:
            ranges[p.name] = dist
    return grid, ranges, fixed


def _sampled(
    ctx: Context,
    params: list[Param],
    ranges: dict[str, dict[str, Any]],
    method: str,
    max_trials: int | None,
    seed: int | None,
) -> dict[str, Any]:
    """``space.random``: the ranges and lists to sample (random's trial count and seed too)."""
    random: dict[str, Any] = {}
    if method == "random":
        random["n_trials"] = max_trials
        if seed is not None:
            random["seed"] = seed
    random["params"] = ranges
    if not ranges and params:
        ctx.refuse(
            "spec.parameters",
            "every parameter has a single value: there is nothing to search",
        )
    modellable = [n for n, d in ranges.items() if "choice" not in d]
    if method not in ("random",) and ranges and not modellable:
        ctx.refuse(
            "spec.algorithm.algorithmName",
            f"sweepyard's {method} models double or int ranges, and every parameter here "
            "is a list (categorical or discrete): use algorithm random or grid",
        )
    return random


def _grid_values(ctx: Context, p: Param) -> list[Any] | None:
    """Every value of ``p`` on a grid; None after refusing."""
    fpath = f"{p.path}.feasibleSpace"
    if p.type in ("categorical", "discrete"):
        return list(p.values)
    if p.log:
        ctx.note(
            f"{fpath}.distribution",
            "logUniform has no effect on a grid (as in Katib): the grid takes every step",
        )
    assert p.low is not None and p.high is not None
    if p.type == "int":
        step = int(p.step or 1)
        return list(range(int(p.low), int(p.high) + 1, step))
    if p.step is None:
        ctx.refuse(
            f"{fpath}.step",
            "required: a grid needs a step for a double parameter (Katib's does too)",
        )
        return None
    dlow, dstep, dhigh = (_decimal(p.raw.get(k)) for k in ("min", "step", "max"))
    if dlow is None or dstep is None or dhigh is None:
        ctx.refuse(fpath, "min, max and step must be decimal numbers")
        return None
    count = int((dhigh - dlow) / dstep) + 1
    return [float(dlow + i * dstep) for i in range(count)]


def _distribution(ctx: Context, p: Param) -> dict[str, Any] | None:
    """``{uniform|loguniform|int|choice: ...}``, or ``{"fixed": value}`` for a single value."""
    fpath = f"{p.path}.feasibleSpace"
    if p.type in ("categorical", "discrete"):
        return {"choice": list(p.values)}
    assert p.low is not None and p.high is not None
    if p.low == p.high:
        ctx.note(fpath, f"min = max = {p.low}: {p.name} is fixed at that value")
        return {"fixed": p.low}
    if p.log:
        return _log_range(ctx, p, fpath)
    if p.type == "int":
        return _int_range(ctx, p, fpath)
    return _double_range(ctx, p, fpath)


def _log_range(ctx: Context, p: Param, fpath: str) -> dict[str, Any] | None:
    """A log-uniform range (its step dropped); an int one starts at 1 at the lowest."""
    assert p.low is not None and p.high is not None
    low, high = p.low, p.high
    if p.step is not None:
        ctx.note(
            f"{fpath}.step",
            "dropped: a log-uniform range has no step (Katib's Optuna algorithms drop it too)",
        )
    if p.type == "int":
        if low < 1:
            ctx.note(f"{fpath}.min", f"{low} is 1 here: a log range of ints starts at 1")
            low = 1
        if low == high:
            return {"fixed": high}
        return {"int": [int(low), int(high)], "log": True}
    if low <= 0:
        ctx.refuse(f"{fpath}.min", f"a logUniform range needs min > 0, got {low}")
        return None
    return {"loguniform": [float(low), float(high)]}


def _int_range(ctx: Context, p: Param, fpath: str) -> dict[str, Any] | None:
    """A uniform range of ints, its max lowered onto the step grid."""
    assert p.low is not None and p.high is not None
    low, high = p.low, p.high
    istep = int(p.step or 1)
    last = int(low) + (int(high) - int(low)) // istep * istep
    if last == low:
        ctx.refuse(f"{fpath}.step", f"step {istep} is larger than max - min")
        return None
    if last != high:
        ctx.note(f"{fpath}.max", f"{high} is {last} here: the last value on the step grid")
    out: dict[str, Any] = {"int": [int(low), last]}
    if istep != 1:
        out["step"] = istep
    return out


def _double_range(ctx: Context, p: Param, fpath: str) -> dict[str, Any] | None:
    """A uniform range of doubles; with a step, its max lowered onto the step grid (computed in
    exact decimals, as written)."""
    assert p.low is not None and p.high is not None
    low, high, step = p.low, p.high, p.step
    if step is None:
        return {"uniform": [float(low), float(high)]}
    dlow, dstep, dhigh = (_decimal(p.raw.get(k)) for k in ("min", "step", "max"))
    if dlow is None or dstep is None or dhigh is None:
        ctx.refuse(fpath, "min, max and step must be decimal numbers")
        return None
    n = int((dhigh - dlow) / dstep)
    if n < 1:
        ctx.refuse(f"{fpath}.step", f"step {step} is larger than max - min")
        return None
    top = float(dlow + n * dstep)
    if dlow + n * dstep != dhigh:
        ctx.note(f"{fpath}.max", f"{high} is {top} here: the last value on the step grid")
    return {"uniform": [float(low), top], "step": float(step)}


def _decimal(text: str | None) -> Decimal | None:
    """``text`` as an exact, finite decimal; None when it is not one."""
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None

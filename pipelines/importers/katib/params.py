"""``spec.parameters``: each parameter checked, named as a sweepyard param, and its feasible space
read (a list of values, or a range with its step and distribution) into a :class:`Param`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.command import RESERVED
from pipelines.importers.katib.common import INTEGER, Context, scalar_text

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Param:
    """One of ``spec.parameters``, checked."""

    path: str  # spec.parameters[i]
    katib: str  # its Katib name
    name: str  # its sweepyard name (an identifier)
    type: str  # double | int | categorical | discrete
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    raw: dict[str, str] = field(default_factory=dict)  # min/max/step as written (exact decimals)
    log: bool = False
    values: list[Any] = field(default_factory=list)


def parameters(ctx: Context, raw: Any) -> list[Param]:
    """The parameters that map, in order (those that do not are refused)."""
    path = "spec.parameters"
    if not isinstance(raw, list) or not raw:
        ctx.refuse(path, "required: the parameters to search")
        return []
    out: list[Param] = []
    names: dict[str, str] = {}
    for i, p in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(p, Mapping):
            ctx.refuse(where, "a parameter is {name, parameterType, feasibleSpace}")
            continue
        for key in sorted(set(p) - {"name", "parameterType", "feasibleSpace"}):
            ctx.refuse(f"{where}.{key}", "not a field of a Katib parameter")
        katib = p.get("name")
        if not isinstance(katib, str) or not katib:
            ctx.refuse(f"{where}.name", "required")
            continue
        name = _param_name(ctx, katib, f"{where}.name")
        if name in names:
            ctx.refuse(
                f"{where}.name",
                f"{katib!r} is {name!r} here, as {names[name]!r} is: rename one"
                if katib != names[name]
                else f"{katib!r} is defined twice",
            )
            continue
        names[name] = katib
        param = _feasible(ctx, where, katib, name, p.get("parameterType"), p.get("feasibleSpace"))
        if param is not None:
            out.append(param)
    return out


def _param_name(ctx: Context, katib: str, where: str) -> str:
    """The sweepyard param of Katib's parameter ``katib``: an identifier no placeholder reserves."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", katib)
    if not IDENTIFIER.match(name):
        name = f"p_{name}"
    if name in RESERVED:
        name = f"{name}_param"
    if name != katib:
        ctx.note(
            where,
            f"{katib!r} is the param {name!r} (a param is an identifier; the command gets it "
            f"as {{{name}}})",
        )
    return name


def _feasible(ctx: Context, where: str, katib: str, name: str, ptype: Any, fs: Any) -> Param | None:
    """The parameter at ``where`` with its type and feasible space; None after refusing."""
    if ptype not in ("double", "int", "categorical", "discrete"):
        ctx.refuse(
            f"{where}.parameterType",
            f"must be double, int, categorical or discrete, got {ptype!r}",
        )
        return None
    fpath = f"{where}.feasibleSpace"
    if not isinstance(fs, Mapping):
        ctx.refuse(fpath, "required: the parameter's range or list")
        return None
    for key in sorted(set(fs) - {"min", "max", "step", "list", "distribution"}):
        ctx.refuse(f"{fpath}.{key}", "not a field of a Katib feasibleSpace")
    param = Param(path=where, katib=katib, name=name, type=ptype)
    if ptype in ("categorical", "discrete"):
        return _listed(ctx, param, fs, fpath)
    return _ranged(ctx, param, fs, fpath)


def _listed(ctx: Context, param: Param, fs: Mapping[str, Any], fpath: str) -> Param | None:
    """A categorical or discrete parameter: its ``list`` of values."""
    ptype = param.type
    for key in ("min", "max", "step"):
        if fs.get(key) not in (None, ""):
            ctx.refuse(f"{fpath}.{key}", f"a {ptype} parameter takes a list, not {key}")
    values = fs.get("list")
    if not isinstance(values, list) or not values:
        ctx.refuse(f"{fpath}.list", f"required: the {ptype} parameter's values")
        return None
    for j, v in enumerate(values):
        if ptype == "categorical":
            param.values.append(v if isinstance(v, str) else scalar_text(v))
        else:
            number = _number(ctx, v, f"{fpath}.list[{j}]", integer=None)
            if number is not None:
                param.values.append(number)
    return param


def _ranged(ctx: Context, param: Param, fs: Mapping[str, Any], fpath: str) -> Param | None:
    """A double or int parameter: its ``min``, ``max``, ``step`` and ``distribution``."""
    ptype = param.type
    if fs.get("list"):
        ctx.refuse(f"{fpath}.list", f"a {ptype} parameter takes min/max (and step), not list")
    integer = ptype == "int"
    for key in ("min", "max"):
        if fs.get(key) in (None, ""):
            ctx.refuse(f"{fpath}.{key}", f"required for a {ptype} parameter")
    param.low = _number(ctx, fs.get("min"), f"{fpath}.min", integer=integer)
    param.high = _number(ctx, fs.get("max"), f"{fpath}.max", integer=integer)
    if fs.get("step") not in (None, ""):
        param.step = _number(ctx, fs.get("step"), f"{fpath}.step", integer=integer)
        if param.step is not None and param.step <= 0:
            ctx.refuse(f"{fpath}.step", f"must be positive, got {fs.get('step')!r}")
            param.step = None
    param.raw = {k: scalar_text(fs[k]) for k in ("min", "max", "step") if fs.get(k) is not None}
    param.log = _log_scale(ctx, fs.get("distribution"), f"{fpath}.distribution")
    if param.low is not None and param.high is not None and param.low > param.high:
        ctx.refuse(fpath, f"min {param.low} is above max {param.high}")
        return None
    if param.low is None or param.high is None:
        return None
    return param


def _log_scale(ctx: Context, dist: Any, where: str) -> bool:
    """Whether the range is sampled log-uniformly (False after refusing ``dist``)."""
    if dist in (None, "", "uniform"):
        return False
    if dist == "logUniform":
        return True
    if dist in ("normal", "logNormal"):
        ctx.refuse(
            where, f"{dist} cannot map: sweepyard samples uniform and log-uniform ranges only"
        )
    else:
        ctx.refuse(where, f"unknown distribution {dist!r}")
    return False


def _number(ctx: Context, value: Any, where: str, *, integer: bool | None) -> Any:
    """``value`` (a string, as Katib writes it, or a YAML number) as an int (``integer``), a
    float, or either (None: discrete values); None after refusing."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        ctx.refuse(where, f"must be a number, got {value!r}")
        return None
    text = str(value).strip()
    if INTEGER.match(text) and integer is not False:
        return int(text)
    if integer:
        ctx.refuse(where, f"must be a whole number, got {value!r}")
        return None
    try:
        number = float(text)
    except ValueError:
        ctx.refuse(where, f"must be a number, got {value!r}")
        return None
    if not math.isfinite(number):
        ctx.refuse(where, f"must be a finite number, got {value!r}")
        return None
    return number

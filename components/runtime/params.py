"""The params a trainer declares, and the binding of a trial's params to them.

A Python trainer declares them either as a dataclass annotating its ``params`` argument
(``def train(trial, params: Params)``) or as keyword parameters after ``trial``
(``def train(trial, *, lr: float, steps: int = 100)``). :func:`declared_params` reads either form
(the config check runs it in a subprocess, see :mod:`components.introspect`); :func:`bind_params`
turns a trial's JSON params into the call's arguments, raising :class:`GiveUp` naming a bad param.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from components.paramtypes import type_problem
from components.runtime.trial import GiveUp

TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class Declared:
    """One declared param: its name, type (``int``/``float``/``str``/``bool``/``any``), default."""

    name: str
    type: str
    required: bool


@dataclass(frozen=True)
class Signature:
    """How a trainer takes its params: one dataclass argument, or keyword arguments."""

    params: tuple[Declared, ...]
    dataclass_arg: str | None  # the argument's name when the params come as one dataclass
    dataclass_type: Any = None


def _type_name(annotation: Any) -> str:
    return TYPES.get(annotation, "any")


def signature(fn: Callable[..., Any]) -> Signature:
    """Read the declared params of a trainer ``fn(trial, ...)``.

    Raises:
        TypeError: ``fn`` is not callable, takes no ``trial`` argument, or has positional
            parameters after it that are not a params dataclass.
    """
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    hints = typing.get_type_hints(fn)
    args = list(inspect.signature(fn).parameters.values())
    if not args or args[0].kind not in (args[0].POSITIONAL_ONLY, args[0].POSITIONAL_OR_KEYWORD):
        raise TypeError("a trainer takes the trial as its first positional argument")
    rest = args[1:]
    if len(rest) == 1 and dataclasses.is_dataclass(hints.get(rest[0].name)):
        cls = hints[rest[0].name]
        field_hints = typing.get_type_hints(cls)
        declared = tuple(
            Declared(
                f.name,
                _type_name(field_hints.get(f.name)),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.init
        )
        return Signature(declared, rest[0].name, cls)
    declared_list = []
    for p in rest:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        declared_list.append(
            Declared(p.name, _type_name(hints.get(p.name)), p.default is inspect.Parameter.empty)
        )
    return Signature(tuple(declared_list), None)


def _convert(decl: Declared, value: Any) -> Any:
    why = type_problem(decl.type, value)
    if why is not None:
        raise GiveUp(f"trial param {decl.name!r} {why}, got {value!r}")
    if decl.type == "int":
        return int(value)
    if decl.type == "float":
        return float(value)
    return value


def bind_params(sig: Signature, params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that call the trainer with ``params`` (after the trial).

    Raises:
        GiveUp: an unknown, missing or mistyped param (the message names it).
    """
    known = {d.name: d for d in sig.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise GiveUp(f"unknown trial param {unknown[0]!r} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for name, decl in known.items():
        if name not in params:
            if decl.required:
                raise GiveUp(f"trial param {name!r} is missing")
            continue
        values[name] = _convert(decl, params[name])
    if sig.dataclass_arg is None:
        return values
    try:
        return {sig.dataclass_arg: sig.dataclass_type(**values)}
    except (TypeError, ValueError) as exc:  # __post_init__ checks are bad input too
        raise GiveUp(f"trial params: {exc}") from exc

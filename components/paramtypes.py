"""The types a trainer declares for its params, and whether a value of the search space fits one.

Pure (standard library and the space's types): the config check (``pipelines/trainer.py``) refuses
a space whose values do not fit before anything is submitted, and the supervisor
(:mod:`components.runtime.params`) converts a trial's JSON params with the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from components.space import Choice, IntRange, LogUniform, SearchSpace, Uniform

TYPES = ("int", "float", "str", "bool", "any")


def type_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not a ``kind`` (``int``/``float``/``str``/``bool``/``any``), or None."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int" and (not numeric or value != int(value)):
        return "must be an integer"
    if kind == "float" and not numeric:
        return "must be a number"
    if kind == "str" and not isinstance(value, str):
        return "must be a string"
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false"
    return None


def space_values(space: SearchSpace) -> Iterator[tuple[str, str, Any, str]]:
    """Every value the space can give a param: ``(param, key path, value, what)``; for a continuous
    range the value is its bounds and ``what`` says that its draws are floats."""
    for name, values in space.grid.items():
        for i, value in enumerate(values):
            yield name, f"search.space.grid.{name}[{i}]", value, ""
    for name, value in space.fixed.items():
        yield name, f"search.space.fixed.{name}", value, ""
    if space.random is None:
        return
    for name, dist in space.random.params.items():
        where = f"search.space.random.params.{name}"
        if isinstance(dist, Choice):
            for i, value in enumerate(dist.choice):
                yield name, f"{where}.choice[{i}]", value, ""
        elif isinstance(dist, IntRange):
            for i, value in enumerate(dist.int):
                yield name, f"{where}.int[{i}]", value, ""
        elif isinstance(dist, Uniform | LogUniform):
            key = "uniform" if isinstance(dist, Uniform) else "loguniform"
            yield name, f"{where}.{key}", list(getattr(dist, key)), f"a {key} range draws floats"


def space_type_problems(space: SearchSpace, declared: dict[str, str]) -> list[tuple[str, str]]:
    """``(key path, message)`` for each value of ``space`` that its param's declared type refuses."""
    problems = []
    for name, where, value, what in space_values(space):
        kind = declared.get(name, "any")
        why = type_problem(kind, 0.5 if what else value)  # a range: any float of it
        if why is not None:
            detail = f" ({what})" if what else ""
            problems.append(
                (where, f"param {name!r} is declared {kind}: {why}, got {value!r}{detail}")
            )
    return problems

"""The config's ``trainer`` key, and its check against the search space (before anything compiles).

``trainer.function`` (a Python trainer, ``module:function``) or ``trainer.command`` (any program,
``{name}`` placeholders filled with the trial's params), plus an optional ``trainer.image``. A
function's declared params are read by importing it in a subprocess
(``python -m components.introspect``): this process never imports torch or the trainer.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.collect import collect_problems
from components.command import RESERVED, placeholders
from components.contract import relative_path_problem
from components.paramtypes import space_type_problems

DEFAULT_FUNCTION = "components.trainers.digits:train"
FUNCTION = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"
IMAGE = r"^[a-z0-9][a-z0-9._/:@-]*$"
INTROSPECT_TIMEOUT = 120
PARAM = r"^[A-Za-z_][A-Za-z0-9_]*$"
ParamType = Literal["int", "float", "str", "bool", "any"]


class TrainerConfig(BaseModel):
    """What runs a trial: a Python function of the trainer contract, or a command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: Annotated[str, Field(pattern=FUNCTION)] | None = None
    command: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    image: Annotated[str, Field(pattern=IMAGE)] | None = None
    params: (
        list[Annotated[str, Field(pattern=PARAM)]]
        | dict[Annotated[str, Field(pattern=PARAM)], ParamType]
        | None
    ) = None
    metrics: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")]] | None = None
    collect: dict[str, Any] | None = None
    model: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TrainerConfig:
        if (self.function is None) == (self.command is None):
            raise ValueError("set exactly one of 'function' and 'command'")
        if self.function is not None and self.params is not None:
            raise ValueError(
                "'params' is for a command; a function declares its own (dataclass or signature)"
            )
        if self.function is not None and self.metrics is not None:
            raise ValueError(
                "'metrics' is for a command; a function declares its own (@reports(...))"
            )
        for key in ("collect", "model"):
            if self.function is not None and getattr(self, key) is not None:
                raise ValueError(f"'{key}' is for a command; a function reports through its Trial")
        return self

    @field_validator("model")
    @classmethod
    def _in_the_working_folder(cls, v: str | None) -> str | None:
        if v is not None and (why := relative_path_problem(v.rstrip("/"))):
            raise ValueError(why.replace("shared disk's root", "trial's working folder"))
        return v


def default_trainer() -> TrainerConfig:
    return TrainerConfig(function=DEFAULT_FUNCTION)


def space_params(space: Any) -> set[str]:
    """Every param a trial of ``space`` gets (grid, random and fixed)."""
    names = set(space.grid) | set(space.fixed)
    if space.random is not None:
        names |= set(space.random.params)
    return names


def check_trainer(
    trainer: TrainerConfig, space: Any, *, has_data: bool = True
) -> list[tuple[str, str]]:
    """``(key path, message)`` for each mismatch between the trainer and the search space."""
    names = space_params(space)
    if trainer.command is not None:
        problems = [
            (f"trainer.command[{i}]", f"placeholder {{{name}}} is not a param of the search space")
            for i, arg in enumerate(trainer.command)
            for name in placeholders(arg)
            if name not in names and name not in RESERVED
        ]
        problems += [
            (f"trainer.command[{i}]", "placeholder {data} needs a data source: set 'data'")
            for i, arg in enumerate(trainer.command)
            if "data" in placeholders(arg) and not has_data
        ]
        problems += [
            ("search.space", f"param {name!r} takes a name the command's placeholders reserve "
             f"({', '.join(sorted(RESERVED))}): rename it")
            for name in sorted(names & RESERVED)
        ]  # fmt: skip
        if trainer.params is not None:
            problems += [
                (
                    "search.space",
                    f"param {name!r} is not in trainer.params ({list(trainer.params)})",
                )
                for name in sorted(names - set(trainer.params))
            ]
        if isinstance(trainer.params, dict):
            problems += space_type_problems(space, dict(trainer.params))
        if trainer.collect is not None:
            problems += collect_problems(trainer.collect)
        return problems
    assert trainer.function is not None
    doc = introspect(trainer.function, os.environ.get("PYTHONPATH", ""), os.getcwd())
    if isinstance(doc, str):
        return [("trainer.function", doc)]
    declared = doc["params"]
    known = {d["name"] for d in declared}
    problems = [
        ("search.space", f"param {name!r} is not declared by {trainer.function} ({sorted(known)})")
        for name in sorted(names - known)
    ]
    problems += [
        (
            "trainer.function",
            f"{trainer.function} requires param {d['name']!r}: set it in the space",
        )
        for d in declared
        if d["required"] and d["name"] not in names
    ]
    problems += space_type_problems(space, {d["name"]: d.get("type", "any") for d in declared})
    return problems


def trainer_warnings(trainer: TrainerConfig, space: Any) -> list[tuple[str, str]]:
    """``(key path, message)`` for what is allowed but likely a mistake: a command that declares
    no ``params`` and uses no placeholder for a param (it gets it only in ``SWEEPYARD_PARAMS``:
    trials that differ only there may be the same run twice)."""
    if trainer.command is None or trainer.params is not None:
        return []
    used = {name for arg in trainer.command for name in placeholders(arg)}
    return [
        ("trainer.command", f"param {name!r} is used by no placeholder: the program gets it only "
         "in SWEEPYARD_PARAMS (declare trainer.params to say it reads it there)")
        for name in sorted(space_params(space) - used)
    ]  # fmt: skip


def declared_metrics(trainer: TrainerConfig) -> list[str] | None:
    """The metrics the trainer declares it logs (None: it does not say, or it does not import)."""
    if trainer.command is not None:
        return trainer.metrics
    assert trainer.function is not None
    doc = introspect(trainer.function, os.environ.get("PYTHONPATH", ""), os.getcwd())
    return None if isinstance(doc, str) else doc.get("metrics")


@functools.cache
def introspect(ref: str, pythonpath: str, cwd: str) -> dict[str, Any] | str:
    """``{"params": [...], "metrics": [...] | None}`` of ``ref`` (imported in a subprocess), or an
    error message."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "components.introspect", ref]
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=INTROSPECT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"importing {ref} took over {INTROSPECT_TIMEOUT}s"
    try:
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"cannot introspect {ref}: {proc.stderr.strip()[-500:] or 'no output'}"
    if "error" in doc:
        return f"{doc['error']} (imported with PYTHONPATH={pythonpath!r} from {cwd})"
    return {"params": list(doc["params"]), "metrics": doc.get("metrics")}

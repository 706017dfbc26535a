"""What a program emits, as metric readings: the grammar of ``trainer.collect`` (pure).

A command trainer's metrics can come from its stdout (Katib's ``name=value`` convention, or regexes
of one's own), a text or JSON-lines file it appends to, or the TensorBoard event files it writes.
This module parses a line or a record and checks a ``trainer.collect`` mapping
(:func:`collect_problems`, at config load); :mod:`components.runtime.collectors` follows the files,
and the supervisor numbers step-less readings and relays each (metric, step) once.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

log = logging.getLogger(__name__)
KATIB_DEFAULT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# Katib's default, also taking `nan` and `inf` (a diverged loss fails its trial, not "never seen")
NAME_VALUE_RE = (
    r"([\w|-]+)\s*=\s*([+-]?(?:[Nn]a[Nn]|[Ii]nf(?:inity)?|\d*(?:\.\d+)?(?:[Ee][+-]?\d+)?))"
)
NAME_VALUE = "name=value"
_METRIC_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_NUMERIC = re.compile(r"\s*[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)\s*", re.I)
_TIME_KEYS = frozenset({"timestamp", "time", "epoch_time"})


@dataclass(frozen=True)
class Reading:
    """One value of one metric; ``step`` None: the caller numbers it (n-th value in the attempt)."""

    name: str
    value: float
    step: int | None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _value_group(pattern: re.Pattern[str]) -> int | str | None:
    """The group holding a metric's value: ``value``, else the first group that is not ``step``."""
    if "value" in pattern.groupindex:
        return "value"
    step = pattern.groupindex.get("step")
    return next((i for i in range(1, pattern.groups + 1) if i != step), None)


def _compile(label: str, regex: object, min_groups: int) -> tuple[re.Pattern[str] | None, str]:
    """The compiled regex, or None and why not."""
    if not isinstance(regex, str):
        return None, f"{label}: the regex must be a string, not {type(regex).__name__}"
    try:
        pattern = re.compile(regex)
    except re.error as e:
        return None, f"{label}: regex {regex!r} does not compile: {e}"
    if pattern.groups < min_groups:
        need = "a capturing group for the value" if min_groups == 1 else "2 groups (name, value)"
        return None, f"{label}: regex {regex!r} has {pattern.groups} group(s); it needs {need}"
    if min_groups == 1 and _value_group(pattern) is None:
        return None, f"{label}: regex {regex!r} has no value group (its only group is 'step')"
    return pattern, ""


def _mapping_problems(spec: Mapping[Any, Any]) -> list[tuple[str, str]]:
    problems = []
    for name, regex in spec.items():
        label = f"metric {name!r}"
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            problems.append((f".{name}", f"{label}: a metric name must match ^[A-Za-z0-9_./-]+$"))
        pattern, why = _compile(label, regex, 1)
        if pattern is None:
            problems.append((f".{name}", why))
    return problems


def _spec_problems(spec: object) -> list[tuple[str, str]]:
    """``(entry, message)`` for each problem of a spec; entry is ``.metric``, ``[i]`` or ``''``."""
    forms = f"give {NAME_VALUE!r}, a mapping {{metric: regex}} or a list of regexes"
    if isinstance(spec, str):
        return [] if spec == NAME_VALUE else [("", f"{spec!r} is not a spec: {forms}")]
    if isinstance(spec, Mapping):
        return _mapping_problems(spec) if spec else [("", f"the spec is empty: {forms}")]
    if isinstance(spec, list | tuple):
        if not spec:
            return [("", f"the spec is empty: {forms}")]
        checked = [(f"[{i}]", _compile(f"entry [{i}]", r, 2)) for i, r in enumerate(spec)]
        return [(where, why) for where, (pattern, why) in checked if pattern is None]
    return [("", f"a spec of type {type(spec).__name__}: {forms}")]


class LineParser:
    """Turns one printed/written text line into readings (build it with :meth:`from_spec`)."""

    def __init__(
        self,
        *,
        metrics: Mapping[str, re.Pattern[str]] | None = None,
        formats: Sequence[re.Pattern[str]] = (),
        step_pairs: bool = False,
    ) -> None:
        self._metrics = dict(metrics or {})
        self._formats = list(formats)
        self._step_pairs = step_pairs

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, str] | Sequence[str]) -> LineParser:
        """A parser for ``"name=value"`` (Katib's stdout convention; a pair named ``step`` sets
        the line's step), ``{metric: regex}`` (group ``value``, else the first other than
        ``step``; group ``step``) or a list of regexes (Katib's metricsFormat: every match,
        group 1 the name, group 2 the value).

        Raises:
            ValueError: naming the offending entry (metric name or list index).
        """
        problems = _spec_problems(spec)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        if isinstance(spec, str):
            return cls(formats=[re.compile(NAME_VALUE_RE)], step_pairs=True)
        if isinstance(spec, Mapping):
            return cls(metrics={name: re.compile(regex) for name, regex in spec.items()})
        return cls(formats=[re.compile(regex) for regex in spec])

    def parse(self, line: str) -> list[Reading]:
        if self._metrics:
            return self._parse_metrics(line)
        pairs: list[tuple[str, float]] = []
        step: int | None = None
        for pattern in self._formats:
            for match in pattern.finditer(line):
                name, text = match.group(1), match.group(2)
                if name is None:
                    continue
                if self._step_pairs and name == "step":
                    step = _int(text) if step is None else step
                    continue
                value = _float(text)
                if value is not None:
                    pairs.append((name, value))
        return [Reading(name, value, step) for name, value in pairs]

    def _parse_metrics(self, line: str) -> list[Reading]:
        readings = []
        for name, pattern in self._metrics.items():
            match = pattern.search(line)
            if match is None:
                continue
            groups = pattern.groupindex
            value = _float(match.group(_value_group(pattern) or 1))
            if value is not None:
                step = _int(match.group("step")) if "step" in groups else None
                readings.append(Reading(name, value, step))
        return readings

    def pattern_for(self, metric: str) -> str | None:
        """The regex that would produce ``metric`` (the list forms' regexes joined by ``' | '``)."""
        if self._metrics:
            pattern = self._metrics.get(metric)
            return None if pattern is None else pattern.pattern
        return " | ".join(p.pattern for p in self._formats)


def _json_number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return float(value)
    return None


def _json_step(value: object) -> int | None:
    number = _json_number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(value) if isinstance(value, int) else int(number)


def parse_json_record(line: str | bytes) -> list[Reading]:
    """One JSON-lines record: an object whose keys are metric names.

    Numbers and numeric strings are values; bools, nulls, lists, objects and other strings are
    skipped. ``step`` (an integer, or an integer-valued float or string) sets the step and is not a
    metric; ``timestamp``/``time``/``epoch_time`` are ignored. Anything but an object: ``[]``.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # includes JSONDecodeError and UnicodeDecodeError
        return []
    if not isinstance(record, dict):
        return []
    step = _json_step(record["step"]) if "step" in record else None
    readings = []
    for name, raw in record.items():
        if name == "step" or name in _TIME_KEYS or not name:
            continue
        value = _json_number(raw)
        if value is not None:
            readings.append(Reading(name, value, step))
    return readings


def _relative_path_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty relative path (a string)"
    path = PurePosixPath(value)
    if path.is_absolute():
        return f"{value!r} must be relative to the trial's work folder, not absolute"
    if ".." in path.parts:
        return f"{value!r} must not contain '..'"
    return None


def _file_problems(spec: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(spec, Mapping):
        return [(where, "must be a mapping {path, format, regex}")]
    problems = [
        (f"{where}.{key}", f"unknown key {key!r}; expected one of format, path, regex")
        for key in spec
        if key not in ("path", "format", "regex")
    ]
    if "path" not in spec:
        problems.append((f"{where}.path", "is required"))
    elif (why := _relative_path_problem(spec["path"])) is not None:
        problems.append((f"{where}.path", why))
    fmt = spec.get("format", "text")
    if fmt not in ("text", "jsonl"):
        problems.append((f"{where}.format", f"must be 'text' or 'jsonl', not {fmt!r}"))
    if "regex" in spec:
        if fmt == "jsonl":
            problems.append((f"{where}.regex", "applies only to format 'text'"))
        else:
            problems += [(f"{where}.regex{e}", m) for e, m in _spec_problems(spec["regex"])]
    return problems


def collect_problems(collect: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key path, message)`` for each problem of a ``trainer.collect`` mapping; ``[]`` if valid."""
    base = "trainer.collect"
    if not isinstance(collect, Mapping):
        return [(base, "must be a mapping with stdout, tensorboard and/or file")]
    problems = [
        (f"{base}.{key}", f"unknown key {key!r}; expected one of file, stdout, tensorboard")
        for key in collect
        if key not in ("stdout", "tensorboard", "file")
    ]
    if "stdout" in collect:
        problems += [(f"{base}.stdout{e}", m) for e, m in _spec_problems(collect["stdout"])]
    if "tensorboard" in collect and (why := _relative_path_problem(collect["tensorboard"])):
        problems.append((f"{base}.tensorboard", why))
    if "file" in collect:
        problems += _file_problems(collect["file"], f"{base}.file")
    stdout, file = collect.get("stdout"), collect.get("file")
    regex = file.get("regex") if isinstance(file, Mapping) else None
    if isinstance(stdout, Mapping) and isinstance(regex, Mapping):
        problems += [
            (f"{base}.file.regex.{name}", f"metric {name!r} is already collected by {base}.stdout")
            for name in regex
            if name in stdout
        ]
    return problems

"""Translate the project's 5-field cron into the 6-field cron of Kubeflow Pipelines.

KFP's scheduler parses ``cron`` with robfig/cron v1 (``cron.Parse``): six fields, **seconds first**
(``second minute hour day-of-month month day-of-week``). Passing a 5-field expression through would
shift every field by one: ``0 3 * * *`` would mean "second 0 of minute 3 of every hour". So the
expression is parsed here, checked field by field against what robfig/cron accepts, and re-emitted
with an explicit ``0`` seconds field; anything that cannot be translated exactly is rejected.

Accepted input (what Argo's CronWorkflow and croniter also accept, minus the extensions robfig/cron
v1 lacks): ``*``, ``?`` (day fields), numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n`` and
``a/n``, lists, month and weekday names (``jan``, ``mon``), weekday ``7`` for Sunday, and the macros
``@yearly @annually @monthly @weekly @daily @midnight @hourly``. Rejected: 6- or 7-field input,
``@every``/``@reboot``, ``L``, ``W``, ``#`` and Jenkins' ``H``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class CronError(ValueError):
    """A cron expression that cannot be translated exactly; the message names the field."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the number of names[0]
    question: bool = False  # '?' allowed (day fields)


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, question=True),
    _Field("month", 1, 12, MONTHS, 1),
    _Field("day of week", 0, 7, WEEKDAYS, 0, question=True),
)
_ELEMENT = re.compile(r"^(?P<range>\*|\?|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?$")


def to_kfp(expression: str) -> str:
    """The 6-field KFP cron (seconds first) for a 5-field cron expression.

    >>> to_kfp("0 3 * * *")
    '0 0 3 * * *'

    Raises:
        CronError: the expression is not a 5-field cron (or a supported macro), or uses syntax
            that robfig/cron v1 would read differently or not at all.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("empty cron expression: expected 5 fields (minute hour day month weekday)")
    text = expression.strip().lower()
    if text.startswith("@"):
        if text not in MACROS:
            raise CronError(
                f"{expression!r}: unsupported macro; use 5 fields or one of {', '.join(MACROS)}"
            )
        text = MACROS[text]
    fields = text.split()
    if len(fields) != 5:
        hint = (
            " (6 fields look like a KFP or seconds-first cron already: write the 5-field form, "
            "it is translated)"
            if len(fields) == 6
            else ""
        )
        raise CronError(
            f"{expression!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}{hint}"
        )
    out = [
        _translate_field(value, spec, expression)
        for value, spec in zip(fields, FIELDS, strict=True)
    ]
    return " ".join(["0", *out])


def _translate_field(value: str, spec: _Field, expression: str) -> str:
    where = f"{expression!r}, {spec.name} field {value!r}"
    days: set[int] = set()
    has_seven = False
    for element in value.split(","):
        m = _ELEMENT.match(element)
        if not m:
            raise CronError(f"{where}: cannot read {element!r}{_unsupported_hint(element)}")
        rng, step = m.group("range"), m.group("step")
        if rng == "?":
            if not spec.question:
                raise CronError(f"{where}: '?' is only allowed in the day fields")
            if step is not None:
                raise CronError(f"{where}: '?' takes no step")
            rng = "*"
        if step is not None and int(step) < 1:
            raise CronError(f"{where}: a step must be at least 1")
        top = 6 if spec.name == "day of week" else spec.high  # 7 only when written out
        if rng == "*":
            low, high = spec.low, top
        else:
            parts = rng.split("-")
            low = _number(parts[0], spec, where)
            if len(parts) == 2:
                high = _number(parts[1], spec, where)
            else:
                high = top if step is not None else low  # 'a/n' means a-max/n
            if low > high:
                raise CronError(f"{where}: range {rng!r} runs backwards")
        values = set(range(low, high + 1, int(step) if step else 1))
        has_seven = has_seven or 7 in values
        days |= values
    if spec.name == "day of week" and has_seven:
        # robfig/cron v1 knows Sunday only as 0: spell the field out with 7 folded into 0.
        return ",".join(str(d) for d in sorted({d % 7 for d in days}))
    return value


def _number(token: str, spec: _Field, where: str) -> int:
    if token.isdigit():
        n = int(token)
    elif token in spec.names:
        n = spec.names.index(token) + spec.name_base
    else:
        allowed = f" or a name ({spec.names[0]}..{spec.names[-1]})" if spec.names else ""
        raise CronError(
            f"{where}: {token!r} is not a number from {spec.low} to {spec.high}{allowed}"
            f"{_unsupported_hint(token)}"
        )
    if not spec.low <= n <= spec.high:
        raise CronError(f"{where}: {n} is outside {spec.low}-{spec.high}")
    return n


def _unsupported_hint(token: str) -> str:
    if "#" in token or token.endswith(("l", "w")) or token == "h" or token.startswith("h("):
        return " (L, W, # and H are not supported by KFP's cron parser)"
    return ""

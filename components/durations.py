"""The one duration grammar: Go's ``time.ParseDuration``, which Argo uses for every duration. Pure.

A duration is an optional sign and one or more terms, each a decimal number (an optional fraction,
``1.5``, ``.5`` and ``1.`` all count) followed by a unit: ``ns``, ``us`` (or ``µs``/``μs``), ``ms``,
``s``, ``m``, ``h``. ``0`` alone is zero. No spaces, no days, no bare numbers: ``1h30m``, ``1.5h``,
``300ms``, ``-5s``.

Fields that read a subset or a superset are wrappers around :func:`parse_duration`, not grammars of
their own:

* :func:`parse_seconds_or_duration` — Argo's ``ParseStringToDuration`` (retry ``backoff.duration``,
  ``maxDuration``, ``cap``; ``suspend.duration``): a bare integer is seconds, else a Go duration;
* :func:`non_negative_duration` — a wait or a budget (``search.time_budget``): no negative values;
* :func:`whole_seconds` — a non-negative duration of whole seconds (the config's retry backoff, which
  KFP's retry policy counts in whole seconds).

Both ``pipelines/`` (the config, the validator, the local runner) and ``components/`` (the suggest
step) import this module; it imports nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

# Go's unitMap, in nanoseconds; "µs" is U+00B5 (micro sign) and "μs" U+03BC (Greek mu), as in Go.
UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
EXAMPLES = "write e.g. 1h30m, 90s, 1.5h or 300ms (units ns, us, ms, s, m, h)"
_MAX_NS = 2**63  # Go's time.Duration is an int64 count of nanoseconds
_TERM = re.compile(r"([0-9]*)(\.[0-9]*)?([^0-9.]*)")
_INTEGER = re.compile(r"[-+]?[0-9]+")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration, exactly as Go's ``time.ParseDuration`` reads it.

    Raises:
        ValueError: ``text`` is not a Go duration (the message names it and why).
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration: not a string; {EXAMPLES}")
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(_why(text, "it is empty" if not text else "no number after the sign"))
    total = 0
    for term in _TERM.finditer(body):  # contiguous terms, then one empty match at the end
        if not term.group():
            break
        whole, fraction, unit = term.groups()
        if not whole and fraction in (None, "."):
            raise ValueError(_why(text, f"expected a number at {body[term.start() :]!r}"))
        if not unit:
            raise ValueError(_why(text, f"missing unit after {term.group()!r}"))
        if unit not in UNITS:
            raise ValueError(_why(text, _unknown_unit(unit)))
        total += _nanoseconds(text, whole, fraction, UNITS[unit])
        if total > _MAX_NS:
            raise ValueError(_why(text, "longer than Go's limit (about 292 years)"))
    if text.startswith("-"):
        return -total / 1e9 if total else 0.0
    if total > _MAX_NS - 1:
        raise ValueError(_why(text, "longer than Go's limit (about 292 years)"))
    return total / 1e9


def is_duration(text: object, parse: Callable[[str], float] = parse_duration) -> bool:
    """Whether ``parse`` (by default :func:`parse_duration`) reads ``text``."""
    if not isinstance(text, str):
        return False
    try:
        parse(text)
    except ValueError:
        return False
    return True


def parse_seconds_or_duration(text: str) -> float:
    """Argo's ``ParseStringToDuration``: an integer (Go's ``strconv.Atoi``) is seconds, anything
    else is read by :func:`parse_duration`. ``"30"`` and ``"30s"`` are both 30.0; ``"1.5"`` is
    neither.

    Raises:
        ValueError: neither (the message is :func:`parse_duration`'s).
    """
    if isinstance(text, str) and _INTEGER.fullmatch(text) and abs(int(text)) < _MAX_NS:
        return float(int(text))
    return parse_duration(text)


def non_negative_duration(text: str) -> str:
    """``text`` when it is a Go duration of zero or more (a wait, a budget); a pydantic validator.

    Raises:
        ValueError: not a duration, or a negative one.
    """
    if parse_duration(text) < 0:
        raise ValueError(f"{text!r} is negative: a wait or a budget is zero or more")
    return text


def whole_seconds(text: str) -> int:
    """The seconds in a non-negative Go duration that is a whole number of seconds (``"10m"``: 600).

    Raises:
        ValueError: not a duration, a negative one, or one with a fraction of a second.
    """
    seconds = parse_duration(non_negative_duration(text))
    if seconds != int(seconds):
        raise ValueError(f"{text!r} is not a whole number of seconds ({seconds:g}s)")
    return int(seconds)


def _nanoseconds(text: str, whole: str, fraction: str | None, unit: int) -> int:
    """One term in nanoseconds, the fraction truncated as Go does."""
    value = int(whole or "0")
    if value > _MAX_NS // unit:
        raise ValueError(_why(text, "longer than Go's limit (about 292 years)"))
    digits = (fraction or ".")[1:]
    part = Fraction(int(digits), 10 ** len(digits)) * unit if digits else Fraction(0)
    return value * unit + int(part)


def _unknown_unit(unit: str) -> str:
    if unit.startswith("d"):
        return f"unknown unit {unit!r}, and there is no day unit (48h is two days)"
    if any(c.isspace() for c in unit):
        return f"unknown unit {unit!r}, and no spaces are allowed (1h30m, not 1h 30m)"
    return f"unknown unit {unit!r}"


def _why(text: str, reason: str) -> str:
    return f"{text!r} is not a duration: {reason}; {EXAMPLES}"

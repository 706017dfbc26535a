"""The expr-lang subset the local runner evaluates. Pure.

* ``retryStrategy.expression``, ``when`` and ``{{=expression}}`` tags: ``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=``, ``and``/``&&``, ``or``/``||``, ``not``/``!``, ``matches``, ``asInt``, ``asFloat``,
  ``string``, string, number and boolean literals, dotted names (:func:`eval_expr`,
  :func:`eval_value`).

``{{...}}`` tags are :mod:`pipelines.argo.tags`; ``depends`` is :mod:`pipelines.argo.depends`;
durations are :mod:`components.durations` (Go's grammar, shared with the components).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any


class ExprError(ValueError):
    """An expression or placeholder that cannot be evaluated (the message names it)."""


# --- tokenizer -------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>&&|\|\||==|!=|<=|>=|[()!<>,])
    | (?P<name>[A-Za-z_][A-Za-z0-9_\-.]*)
    )""",
    re.VERBOSE,
)


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"{where}: cannot parse {text!r} at {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    """Recursive descent over ``or > and > not > comparison > primary``."""

    def __init__(self, text: str, where: str, resolve: Callable[[str], Any]):
        self.toks = _tokens(text, where)
        self.i = 0
        self.where = where
        self.text = text
        self.resolve = resolve

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExprError(f"{self.where}: expected {value or 'more'} in {self.text!r}")
        self.i += 1
        return tok

    def is_op(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] in ("op", "name") and tok[1] in values

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExprError(f"{self.where}: unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        left = self.and_()
        while self.is_op("||", "or"):
            self.take()
            right = self.and_()
            left = _truthy(left) or _truthy(right)
        return left

    def and_(self) -> Any:
        left = self.not_()
        while self.is_op("&&", "and"):
            self.take()
            right = self.not_()
            left = _truthy(left) and _truthy(right)
        return left

    def not_(self) -> Any:
        if self.is_op("!", "not"):
            self.take()
            return not _truthy(self.not_())
        return self.cmp()

    def cmp(self) -> Any:
        left = self.primary()
        if self.is_op("==", "!=", "<", "<=", ">", ">=", "matches"):
            op = self.take()[1]
            right = self.primary()
            return _compare(op, left, right, self.where)
        return left

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind == "name":
            if self.is_op("("):
                self.take("(")
                arg = self.or_()
                self.take(")")
                return _call(value, arg, self.where)
            if value in ("true", "false"):
                return value == "true"
            return self.resolve(value)
        raise ExprError(f"{self.where}: unexpected {value!r} in {self.text!r}")


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.lower() == "true"
    return bool(v)


def _compare(op: str, left: Any, right: Any, where: str) -> bool:
    if op == "matches":
        return re.search(str(right), str(left)) is not None
    if isinstance(left, bool) or isinstance(right, bool):
        left, right = _as_text(left), _as_text(right)
    elif isinstance(left, int | float) != isinstance(right, int | float):
        # `when: "{{x}} > 5"` substitutes x as a bare word: compare numerically when both look numeric
        try:
            left, right = float(left), float(right)
        except (TypeError, ValueError):
            left, right = _as_text(left), _as_text(right)
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    try:
        return ops[op](left, right)
    except TypeError as e:
        raise ExprError(f"{where}: cannot compare {left!r} {op} {right!r}") from e


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _call(name: str, arg: Any, where: str) -> Any:
    try:
        if name == "asInt":
            return int(float(arg)) if isinstance(arg, str) and "." in arg else int(arg)
        if name == "asFloat":
            return float(arg)
        if name == "string":
            return _as_text(arg)
        if name == "toJson":  # a value as JSON: a string becomes a quoted, escaped literal
            return json.dumps(arg, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ExprError(f"{where}: {name}({arg!r}) failed: {e}") from e
    raise ExprError(f"{where}: unsupported function {name}()")


def eval_expr(text: str, names: Mapping[str, Any], where: str, *, bare_words: bool = False) -> bool:
    """Evaluate a retry expression or a ``when`` condition (already substituted).

    Args:
        text: the expression.
        names: values of dotted names, e.g. ``{"lastRetry.exitCode": "3"}``.
        where: the field path, for error messages.
        bare_words: unknown names are string literals (``when: "heads == heads"``, as Argo reads
            substituted conditions); otherwise an unknown name is an error.
    """
    return _truthy(_Parser(text, where, _resolver(text, names, where, bare_words)).parse())


def eval_value(text: str, names: Mapping[str, Any], where: str) -> str:
    """Evaluate an ``{{=expression}}`` tag to the text Argo substitutes (booleans as ``true``)."""
    return _as_text(_Parser(text, where, _resolver(text, names, where, False)).parse())


def check_expression(text: str, where: str) -> None:
    """Raise :class:`ExprError` when ``text`` is outside the subset :func:`eval_value` evaluates
    (an unknown function such as ``jsonpath``, an operator such as ``*``); names are not looked up."""
    _Parser(text, where, lambda name: "0").parse()


def _resolver(
    text: str, names: Mapping[str, Any], where: str, bare_words: bool
) -> Callable[[str], Any]:
    def resolve(name: str) -> Any:
        if name in names:
            return names[name]
        if bare_words:
            return name
        raise ExprError(f"{where}: unknown name {name!r} in {text!r} (known: {', '.join(names)})")

    return resolve

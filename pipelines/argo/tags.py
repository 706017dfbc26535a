"""``{{...}}`` tags: the one scanner and substituter of the validator and the local runner.

Argo reads a string with ``fasttemplate`` (``util/template/template.go``, start ``{{``, end ``}}``):
from each ``{{`` the tag runs to the *first* ``}}`` after it, whatever lies between, so
``{{ a }b }}`` is one tag ``a }b``; a ``{{`` with no ``}}`` after it makes the whole string an error
("Cannot find end tag"). A tag whose raw text starts with ``=`` is an expression tag
(``util/template/kind.go``: ``{{=expr}}``, evaluated with expr-lang); any other tag is a simple
tag, looked up after trimming spaces (``simple_template.go``: ``strings.TrimSpace(tag)``), so
``{{ =x }}`` is the simple tag ``=x``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipelines.argo.expr import ExprError

START, END = "{{", "}}"
SIMPLE, EXPRESSION = "simple", "expression"


class TagError(ExprError):
    """A string Argo cannot read as a template (a ``{{`` without its ``}}``)."""


@dataclass(frozen=True)
class Tag:
    """One ``{{...}}`` tag.

    Attributes:
        kind: :data:`SIMPLE` or :data:`EXPRESSION`.
        body: a simple tag's name (trimmed), or an expression tag's expression (after the ``=``).
        raw: the text between ``{{`` and ``}}``, as written.
    """

    kind: str
    body: str
    raw: str

    def __str__(self) -> str:
        return f"{START}{self.raw}{END}"


def _tag(raw: str) -> Tag:
    if raw.startswith("="):
        return Tag(EXPRESSION, raw[1:].strip(), raw)
    return Tag(SIMPLE, raw.strip(), raw)


def scan(text: str) -> list[str | Tag]:
    """``text`` as a list of literal pieces and tags, in order.

    Raises:
        TagError: a ``{{`` with no ``}}`` after it (Argo rejects the whole string).
    """
    parts: list[str | Tag] = []
    pos = 0
    while True:
        start = text.find(START, pos)
        if start < 0:
            if pos < len(text):
                parts.append(text[pos:])
            return parts
        end = text.find(END, start + len(START))
        if end < 0:
            raise TagError(f"cannot find the end of the tag {{{{ in {text!r}")
        if start > pos:
            parts.append(text[pos:start])
        parts.append(_tag(text[start + len(START) : end]))
        pos = end + len(END)


def tags(text: str) -> list[Tag]:
    """The tags of ``text`` (raises :class:`TagError` like :func:`scan`)."""
    return [part for part in scan(text) if isinstance(part, Tag)] if START in text else []


def substitute(
    text: str,
    lookup: Callable[[str], str | None],
    where: str,
    evaluate: Callable[[str], str] | None = None,
) -> str:
    """Replace every tag of ``text``: simple tags by ``lookup(name)``, expression tags by
    ``evaluate(expression)``.

    Raises:
        ExprError: an unterminated tag, a simple tag ``lookup`` does not know, or an expression
            tag with no ``evaluate`` (the message names the tag and ``where``).
    """
    if START not in text:
        return text
    try:
        parts = scan(text)
    except TagError as e:
        raise TagError(f"{where}: {e}") from e
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part.kind == EXPRESSION:
            if evaluate is None:
                raise ExprError(f"{where}: expression tags ({part}) cannot be evaluated here")
            out.append(evaluate(part.body))
        else:
            value = lookup(part.body)
            if value is None:
                raise ExprError(f"{where}: unresolved placeholder {{{{{part.body}}}}}")
            out.append(value)
    return "".join(out)


def deep_substitute(
    obj: Any,
    lookup: Callable[[str], str | None],
    where: str,
    evaluate: Callable[[str], str] | None = None,
) -> Any:
    """:func:`substitute` applied to every string inside lists and dicts (keys left as they are)."""
    if isinstance(obj, str):
        return substitute(obj, lookup, where, evaluate)
    if isinstance(obj, list):
        return [deep_substitute(v, lookup, where, evaluate) for v in obj]
    if isinstance(obj, dict):
        return {k: deep_substitute(v, lookup, where, evaluate) for k, v in obj.items()}
    return obj


Path = tuple[str | int, ...]


def walk_tags(value: Any, path: Path) -> Iterator[tuple[Path, Tag | TagError]]:
    """Every tag in the strings of ``value`` (keys included) with the path it sits at; a string
    that cannot be scanned yields its :class:`TagError` instead."""
    if isinstance(value, str):
        if START not in value:
            return
        try:
            found = tags(value)
        except TagError as e:
            yield path, e
            return
        for tag in found:
            yield path, tag
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield from walk_tags(key, path)
            yield from walk_tags(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk_tags(item, (*path, i))

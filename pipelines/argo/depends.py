"""DAG ``depends``: one parser producing a tree, which the validator inspects and the runner evaluates.

Argo's grammar (``workflow/common/ancestry.go``, ``workflow/controller/dag.go``): every match of
``taskNameRegex`` — ``[a-zA-Z0-9][-a-zA-Z0-9]*`` optionally followed by ``.Result`` where the
result starts with a capital letter — is a task reference, and everything else is left to
expr-lang, which then evaluates the expression with each task bound to its TaskResults. Hence:

* a word is always a task name: ``a and b`` names three tasks (``a``, ``and``, ``b``) and is
  not valid expr once they are expanded, so it is rejected — ``and``/``or``/``not`` are not
  operators here; the operators are ``&&``, ``||``, ``!`` and parentheses;
* ``_`` is not part of a task name: ``a_b && c`` is rejected (Argo reads tasks ``a``, ``b``);
* ``a.succeeded`` is rejected: a lowercase word after ``.`` is not a result (Argo reads two tasks
  joined by a ``.``, which expr-lang cannot evaluate);
* ``A.Result`` with a capitalised result that is not a TaskResult is rejected
  (``ValidateTaskResults``);
* unbalanced parentheses (``(a || b``) are rejected, as expr-lang's parser does.

A bare task name ``A`` means ``A.Succeeded || A.Skipped || A.Daemoned`` (plus ``Errored``/``Failed``
with ``continueOn``), see :func:`pipelines.argo.vocab.plain_dependency_results`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipelines.argo.expr import ExprError
from pipelines.argo.vocab import TASK_RESULTS


class DependsError(ExprError):
    """A ``depends`` expression Argo would not evaluate (the message says where it stops)."""


@dataclass(frozen=True)
class Ref:
    """``task`` (``result`` None: the plain form) or ``task.Result``."""

    task: str
    result: str | None = None


@dataclass(frozen=True)
class Not:
    operand: Depends


@dataclass(frozen=True)
class And:
    left: Depends
    right: Depends


@dataclass(frozen=True)
class Or:
    left: Depends
    right: Depends


Depends = Ref | Not | And | Or

# taskNameRegex, anchored per token, and the operators expr-lang would accept between them.
_TOKEN = re.compile(
    r"(?P<ref>[a-zA-Z0-9][-a-zA-Z0-9]*(?:\.[A-Za-z][A-Za-z0-9_]*)?)|(?P<op>&&|\|\||!|\(|\))"
)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            raise DependsError(f"cannot parse depends {text!r} at {text[pos:]!r}")
        out.append(match.group())
        pos = match.end()
    return out


def _ref(token: str) -> Ref:
    task, _, result = token.partition(".")
    if not result:
        return Ref(task)
    if not result[0].isupper():
        raise DependsError(
            f"{token!r} in depends: {result!r} is not a task result (results are capitalised: "
            f"{', '.join(TASK_RESULTS)})"
        )
    if result not in TASK_RESULTS:
        raise DependsError(
            f"unknown result {result!r} for task {task!r} in depends "
            f"(one of: {', '.join(TASK_RESULTS)})"
        )
    return Ref(task, result)


class _Parser:
    """``or := and ('||' and)*``; ``and := unary ('&&' unary)*``; ``unary := '!' unary | atom``;
    ``atom := REF | '(' or ')'`` — expr-lang's precedence (``!`` over ``&&`` over ``||``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def fail(self, why: str) -> DependsError:
        return DependsError(f"malformed depends {self.text!r}: {why}")

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> Depends:
        if not self.toks:
            raise self.fail("expression is empty or ends with an operator")
        tree = self.or_()
        if self.peek() is not None:
            token = self.peek()
            if token == ")":
                raise self.fail("unbalanced ')'")
            raise self.fail(
                f"expected && or || before {token!r} (every word is a task name here; the "
                "operators are &&, || and !)"
            )
        return tree

    def or_(self) -> Depends:
        tree = self.and_()
        while self.peek() == "||":
            self.i += 1
            tree = Or(tree, self.and_())
        return tree

    def and_(self) -> Depends:
        tree = self.unary()
        while self.peek() == "&&":
            self.i += 1
            tree = And(tree, self.unary())
        return tree

    def unary(self) -> Depends:
        if self.peek() == "!":
            self.i += 1
            return Not(self.unary())
        return self.atom()

    def atom(self) -> Depends:
        token = self.peek()
        if token is None:
            raise self.fail("expression is empty or ends with an operator")
        self.i += 1
        if token == "(":
            tree = self.or_()
            if self.peek() != ")":
                raise self.fail("unbalanced '('")
            self.i += 1
            return tree
        if token in ("&&", "||", ")"):
            raise self.fail(f"expected a task name before {token!r}")
        return _ref(token)


def parse(text: str) -> Depends:
    """The tree of a ``depends`` expression.

    Raises:
        DependsError: the expression is not one Argo evaluates (see the module's notes).
    """
    return _Parser(text).parse()


def from_dependencies(names: Iterable[str]) -> Depends | None:
    """The tree of the older ``dependencies: [A, B]`` (``A && B``, Argo's ``getTaskDependsLogic``)."""
    tree: Depends | None = None
    for name in names:
        tree = Ref(str(name)) if tree is None else And(tree, Ref(str(name)))
    return tree


def of_task(task: dict[str, object] | object) -> Depends | None:
    """The tree of a DAG task's ``depends`` or ``dependencies`` (None: it depends on nothing)."""
    if not isinstance(task, dict):
        return None
    if task.get("depends"):
        return parse(str(task["depends"]))
    deps = task.get("dependencies")
    return from_dependencies(deps) if isinstance(deps, list) else None


def refs(tree: Depends | None) -> list[Ref]:
    """Every task reference of the tree, left to right."""
    if tree is None:
        return []
    if isinstance(tree, Ref):
        return [tree]
    if isinstance(tree, Not):
        return refs(tree.operand)
    return [*refs(tree.left), *refs(tree.right)]


def task_names(tree: Depends | None) -> list[str]:
    """The tasks the tree names, in order, without duplicates."""
    return list(dict.fromkeys(ref.task for ref in refs(tree)))


def results_by_task(tree: Depends | None) -> dict[str, set[str]]:
    """``{task: {results named}}``; the plain form counts as ``""``."""
    out: dict[str, set[str]] = {}
    for ref in refs(tree):
        out.setdefault(ref.task, set()).add(ref.result or "")
    return out


def evaluate(tree: Depends | None, holds: Callable[[Ref], bool]) -> bool:
    """Whether the task may run: ``holds(ref)`` answers one reference (None: no dependency)."""
    if tree is None:
        return True
    if isinstance(tree, Ref):
        return holds(tree)
    if isinstance(tree, Not):
        return not evaluate(tree.operand, holds)
    if isinstance(tree, And):
        return evaluate(tree.left, holds) and evaluate(tree.right, holds)
    return evaluate(tree.left, holds) or evaluate(tree.right, holds)


def render(tree: Depends) -> str:
    """The tree as a fully parenthesised expression (what the differential test compares)."""
    if isinstance(tree, Ref):
        return tree.task if tree.result is None else f"{tree.task}.{tree.result}"
    if isinstance(tree, Not):
        return f"!{render(tree.operand)}"
    op = "&&" if isinstance(tree, And) else "||"
    return f"({render(tree.left)} {op} {render(tree.right)})"

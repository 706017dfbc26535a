"""The validator and the local runner read ``{{...}}`` tags and ``depends`` the same way.

The same corpus — the cases that once split them, every tag and ``depends`` of the upstream Argo
examples, and seeded random ones — goes through the validator (``validate_document`` on a workflow
holding the text) and through the runner (the substitution a pod's body gets; the DAG's
``depends`` check with its tasks' results). Both must accept with the same reading, or both
reject. An independent model of Argo's own procedure (fasttemplate's scan; ``taskNameRegex``,
``expandDependency`` and expr-lang's boolean operators) says what the reading should be.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pipelines.argo import depends
from pipelines.argo.expr import ExprError
from pipelines.argo.tags import deep_substitute
from pipelines.backends.local.engine import _depends_ok
from pipelines.backends.local.records import Node
from pipelines.validate import refs, validate_document
from tests.conftest import SHARED_ARGO

EXAMPLES = SHARED_ARGO / "examples"
ISSUE_TAGS = ["{{ a }b }}", "{{=expr}}", "{{ =x }}", "{{a", "a}}b{{c}}", "{{{x}}}", "{{}}"]
ISSUE_DEPENDS = ["a_b && c", "a.succeeded", "(a || b", "a and b", "A && (B.Succeeded || C.Failed)"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _upstream() -> tuple[list[str], list[str]]:
    tags: set[str] = set()
    deps: set[str] = set()
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            tags |= {s for s in _strings(doc) if "{{" in s}
            for holder in _find(doc, "depends"):
                deps.add(str(holder))
    return sorted(tags), sorted(deps)


def _find(value: Any, key: str) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, item in value.items():
            if k == key:
                yield item
            yield from _find(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from _find(item, key)


def _generated_tags(n: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    pieces = ["{{", "}}", "{", "}", " ", "=", "a", "b.c", "item", "1+1", "x"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(n)]


NAMES = ["a", "b", "c", "build-x", "and", "B"]  # tasks of the DAG the expressions live in


def _generated_depends(n: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    pieces = [*NAMES, "nope", "a_b", "a.Succeeded", "b.Failed", "c.AnySucceeded", "a.succeeded"]
    pieces += ["c.AllFailed", "b.Bogus", "&&", "||", "!", "(", ")", " ", "and", "or", "==", "."]
    return ["".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 7)))
            for _ in range(n)]  # fmt: skip


UPSTREAM_TAGS, UPSTREAM_DEPENDS = _upstream()
TAG_CORPUS = ISSUE_TAGS + UPSTREAM_TAGS + _generated_tags(400)
DEPENDS_CORPUS = ISSUE_DEPENDS + UPSTREAM_DEPENDS + _generated_depends(600)


# --- tags ------------------------------------------------------------------------------------------


def argo_tags(text: str) -> list[tuple[str, str]] | None:
    """fasttemplate's reading (start ``{{``, end the first ``}}`` after it); None: Argo rejects."""
    out: list[tuple[str, str]] = []
    rest = text
    while "{{" in rest:
        rest = rest[rest.index("{{") + 2 :]
        if "}}" not in rest:
            return None
        raw, rest = rest[: rest.index("}}")], rest[rest.index("}}") + 2 :]
        out.append(
            ("expression", raw[1:].strip()) if raw.startswith("=") else ("simple", raw.strip())
        )
    return out


def validator_reading(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, list[str]]:
    """Whether the validator accepts ``text`` in a container's args, and the simple tags it reads
    (every reference resolves here: only how the text is read is compared)."""
    seen: list[str] = []

    def check(self: refs.Scope, tag: str) -> str | None:
        seen.append(tag)
        return None

    monkeypatch.setattr(refs.Scope, "check", check)
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "tags"},
        "spec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "container": {"image": "busybox", "args": [text]}}],
        },
    }
    return validate_document(doc) == [], seen


def runner_reading(text: str) -> tuple[bool, list[tuple[str, str]]]:
    """Whether the runner substitutes ``text`` in a pod's body, and the tags it looked up."""
    seen: list[tuple[str, str]] = []

    def lookup(name: str) -> str:
        seen.append(("simple", name))
        return "v"

    def evaluate(expression: str) -> str:
        seen.append(("expression", expression))
        return "e"

    try:
        deep_substitute({"args": [text]}, lookup, "template main", evaluate)
    except ExprError:
        return False, seen
    return True, seen


@pytest.mark.parametrize("text", TAG_CORPUS)
def test_tags_are_read_alike(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = argo_tags(text)
    valid, checked = validator_reading(text, monkeypatch)
    runs, looked_up = runner_reading(text)
    assert valid is runs is (expected is not None)
    if expected is not None:
        assert looked_up == expected
        assert checked == [body for kind, body in expected if kind == "simple"]


def test_the_corpus_holds_the_cases_that_split_them() -> None:
    assert argo_tags("{{ a }b }}") == [("simple", "a }b")]
    assert argo_tags("{{=expr}}") == [("expression", "expr")]
    assert len(UPSTREAM_TAGS) > 100 and len(UPSTREAM_DEPENDS) > 20
    assert any(argo_tags(t) is None for t in TAG_CORPUS)
    accepted = [t for t in DEPENDS_CORPUS if argo_depends(t, universe(t)) is not None]
    assert 50 < len(accepted) < len(DEPENDS_CORPUS) - 50  # both verdicts are well represented
    for case in ISSUE_DEPENDS[:-1]:
        assert argo_depends(case, universe(case)) is None, case


# --- depends ---------------------------------------------------------------------------------------

_TASK_NAME = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)")
_RESULTS = (
    *("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned"),
    *("AnySucceeded", "AllFailed"),
)


def argo_depends(text: str, tasks: list[str] | None) -> str | None:
    """The Python form of what Argo evaluates (``GetTaskDependencies``: every ``taskNameRegex``
    match is a task, a bare one expanded to Succeeded || Skipped || Daemoned; ``-`` becomes ``_``;
    expr-lang's ``&&``, ``||``, ``!``); None where Argo rejects it (an unknown result or task, or
    not an expression; ``tasks`` None: any task exists). Comparisons (``==``) are left out of the model, as out of the grammar."""
    out, pos = "", 0
    for match in _TASK_NAME.finditer(text):
        out += text[pos : match.start()]
        pos = match.end()
        task, _, result = match.group().partition(".")
        if (tasks is not None and task not in tasks) or (result and result not in _RESULTS):
            return None
        parts = [result] if result else ["Succeeded", "Skipped", "Daemoned"]
        out += "(" + " || ".join(f"T_{task}.{r}" for r in parts) + ")"
    out = (out + text[pos:]).replace("-", "_")
    if not re.fullmatch(r"[\sA-Za-z0-9_.()&|!]*", out) or re.search(r"\(\s*\)", out):
        return None
    python = out.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    if re.search(r"[&|]", python):
        return None
    try:
        tree = ast.parse(python.strip(), mode="eval")
    except SyntaxError:
        return None
    # no calls, tuples or comparisons: not expr-lang's boolean operators
    allowed: tuple[type[ast.AST], ...] = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp)
    allowed += (ast.Not, ast.Attribute, ast.Name, ast.Load)
    if not all(isinstance(node, allowed) for node in ast.walk(tree)):
        return None
    return python.strip()


def universe(text: str) -> list[str]:
    """The DAG's tasks: ``NAMES`` and every name the text may mean, except ``nope`` (never a
    task), ``last`` (the task holding the expression) and names starting with a digit."""
    found = [m.group().partition(".")[0] for m in _TASK_NAME.finditer(text)]
    extra = [n for n in found if n not in ("nope", "last") and not n[0].isdigit()]
    return list(dict.fromkeys([*NAMES, *extra]))


def validator_accepts(text: str, names: list[str]) -> bool:
    """A DAG whose tasks ``names`` loop, and one more task with ``depends: text``."""
    tasks: list[dict[str, Any]] = [
        {"name": name, "template": "leaf", "withItems": [1, 2]} for name in names
    ]
    tasks.append({"name": "last", "template": "leaf", "depends": text})
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "deps"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": tasks}},
                {"name": "leaf", "container": {"image": "busybox"}},
            ],
        },
    }
    return validate_document(doc) == []


def _states(seed: int, names: list[str]) -> Iterator[dict[str, tuple[str, list[str]]]]:
    rng = random.Random(seed)
    phases = ["Succeeded", "Failed", "Error", "Skipped", "Omitted"]
    for _ in range(12):
        yield {
            name: (rng.choice(phases), [rng.choice(phases) for _ in range(rng.randint(0, 2))])
            for name in names
        }


def _argo_value(python: str, state: dict[str, tuple[str, list[str]]]) -> bool:
    scope = {}
    for name, (phase, kids) in state.items():
        scope["T_" + name.replace("-", "_")] = SimpleNamespace(
            Succeeded=phase == "Succeeded",
            Failed=phase == "Failed",
            Errored=phase == "Error",
            Skipped=phase == "Skipped",
            Omitted=phase == "Omitted",
            Daemoned=False,
            AnySucceeded=any(k == "Succeeded" for k in kids),
            AllFailed=bool(kids) and all(k == "Failed" for k in kids),
        )
    return bool(eval(python, {"__builtins__": {}}, scope))  # noqa: S307 - the test's own model


@pytest.mark.parametrize("text", DEPENDS_CORPUS)
def test_depends_are_read_alike(text: str) -> None:
    names = universe(text)
    python = argo_depends(text, names)
    valid = validator_accepts(text, names)
    try:  # the runner's reading; whether each task exists is the validator's check, made once
        tree = depends.of_task({"name": "last", "depends": text})
    except depends.DependsError:
        tree = None
    assert (tree is not None) is (argo_depends(text, None) is not None), text
    runs = tree is not None and set(depends.task_names(tree)) <= set(names)
    assert valid is runs is (python is not None), text
    if python is None or tree is None:
        return
    tasks = {name: {"name": name} for name in names}
    for state in _states(len(text), names):
        results = {
            name: Node(
                name=name,
                template="leaf",
                kind="TaskGroup",
                phase=phase,
                children=[
                    Node(name=f"{name}(i)", template="leaf", kind="Pod", phase=k) for k in kids
                ],
            )
            for name, (phase, kids) in state.items()
        }
        assert _depends_ok(tree, tasks, results) is _argo_value(python, state), (text, state)


def test_every_result_of_a_plain_name_is_argos() -> None:
    """``A`` alone holds when A Succeeded or was Skipped, as ``expandDependency`` says."""
    tree = depends.parse("a")
    tasks = {"a": {"name": "a"}}
    for phase in ["Succeeded", "Failed", "Error", "Skipped", "Omitted"]:
        node = Node(name="a", template="leaf", kind="Pod", phase=phase)
        assert _depends_ok(tree, tasks, {"a": node}) is (phase in ("Succeeded", "Skipped"))

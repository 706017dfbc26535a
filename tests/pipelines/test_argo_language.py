"""pipelines/argo: the cases where Argo's own grammar decides, read as Argo reads them."""

from __future__ import annotations

import re

import pytest

from pipelines.argo import depends
from pipelines.argo.tags import EXPRESSION, SIMPLE, Tag, TagError, scan, substitute


def test_a_tag_runs_to_the_first_closing_braces() -> None:
    assert scan("x{{ a }b }}y") == ["x", Tag(SIMPLE, "a }b", " a }b "), "y"]
    assert scan("{{=inputs.parameters.n}}") == [
        Tag(EXPRESSION, "inputs.parameters.n", "=inputs.parameters.n")
    ]
    assert scan("{{ =x }}") == [Tag(SIMPLE, "=x", " =x ")]  # the = must come first
    with pytest.raises(TagError, match="cannot find the end"):
        scan("a {{b")


def test_expression_tags_are_evaluated_by_the_caller() -> None:
    text = substitute("n={{=n}} m={{m}}", {"m": "1"}.get, "w", lambda e: f"<{e}>")
    assert text == "n=<n> m=1"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a_b && c", "cannot parse depends"),
        ("a.succeeded", "is not a task result"),
        ("(a || b", "unbalanced '('"),
        ("a || b)", "unbalanced ')'"),
        ("a and b", "every word is a task name"),
        ("a.Finished", "unknown result 'Finished'"),
        ("a &&", "ends with an operator"),
    ],
)
def test_depends_that_argo_rejects(text: str, why: str) -> None:
    with pytest.raises(depends.DependsError, match=re.escape(why)):
        depends.parse(text)


def test_depends_tree_keeps_argos_precedence() -> None:
    tree = depends.parse("!a && b-1.Succeeded || (c.AnySucceeded && !!d)")
    assert depends.render(tree) == "((!a && b-1.Succeeded) || (c.AnySucceeded && !!d))"
    assert depends.task_names(tree) == ["a", "b-1", "c", "d"]
    assert depends.results_by_task(tree)["c"] == {"AnySucceeded"}
    assert depends.from_dependencies(["x", "y"]) == depends.And(depends.Ref("x"), depends.Ref("y"))

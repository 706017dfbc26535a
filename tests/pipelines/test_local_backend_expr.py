"""The small languages of a manifest: depends, retry expressions and when, placeholders (durations:
``tests/components/test_durations.py``)."""

from __future__ import annotations

import pytest

from pipelines.argo import depends as argo_depends
from pipelines.argo.expr import ExprError, eval_expr
from pipelines.argo.tags import substitute
from pipelines.backends.local.retry import backoff_seconds
from pipelines.build.argo import RETRY_EXPRESSION


def depends(text: str, state: dict[str, str]) -> bool:
    """``state``: task -> phase; plain ``task`` means Succeeded or Skipped, as in Argo."""

    def result_of(ref: argo_depends.Ref) -> bool:
        phase = state[ref.task]
        if ref.result is None:
            return phase in ("Succeeded", "Skipped")
        return phase == {"Errored": "Error"}.get(ref.result, ref.result)

    return argo_depends.evaluate(argo_depends.parse(text), result_of)


@pytest.mark.parametrize(
    ("text", "state", "expected"),
    [
        ("A && (B.Succeeded || C.Failed)", {"A": "Succeeded", "B": "Failed", "C": "Failed"}, True),
        ("A && (B.Succeeded || C.Failed)", {"A": "Succeeded", "B": "Failed", "C": "Succeeded"}, False),
        ("A && !B.Errored", {"A": "Skipped", "B": "Error"}, False),
        ("should-execute-2.Succeeded || should-not-execute", {"should-execute-2": "Omitted", "should-not-execute": "Succeeded"}, True),
        ("A.Omitted", {"A": "Omitted"}, True),
    ],
)  # fmt: skip
def test_depends(text: str, state: dict[str, str], expected: bool) -> None:
    assert depends(text, state) is expected


def test_depends_names_and_bad_results() -> None:
    tree = argo_depends.parse("plan && fetch.Succeeded || plan.Failed")
    assert argo_depends.task_names(tree) == ["plan", "fetch"]
    with pytest.raises(ExprError, match="Finished"):
        argo_depends.parse("A.Finished")


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [("Failed", "3", False), ("Failed", "1", True), ("Error", "3", True), ("Error", "143", True)],
)
def test_the_compiled_retry_expression(status: str, code: str, retry: bool) -> None:
    names = {"lastRetry.status": status, "lastRetry.exitCode": code, "lastRetry.message": ""}
    assert eval_expr(RETRY_EXPRESSION, names, "retryStrategy.expression") is retry


def test_expression_operators() -> None:
    names = {"lastRetry.exitCode": "2", "lastRetry.message": "pod deleted", "x": "true"}
    assert eval_expr("asInt(lastRetry.exitCode) > 1 && x == true", names, "e")
    assert eval_expr("lastRetry.message matches 'node shutdown|pod deleted'", names, "e")
    assert eval_expr('not (lastRetry.exitCode != "2") and !false', names, "e")
    with pytest.raises(ExprError, match="unknown name 'lastRetry.bogus'"):
        eval_expr("lastRetry.bogus == 1", names, "e")
    assert eval_expr("tails == tails", {}, "when", bare_words=True)
    assert not eval_expr("Failed == Succeeded", {}, "when", bare_words=True)
    assert eval_expr("10 > 9", {}, "when", bare_words=True)


def test_substitute_names_what_is_unresolved() -> None:
    values = {"inputs.parameters.a": "1", "item.id": "t1"}
    assert substitute("{{inputs.parameters.a}}-{{ item.id }}", values.get, "w") == "1-t1"
    with pytest.raises(
        ExprError, match=r"template train args: unresolved placeholder \{\{nope\}\}"
    ):
        substitute("{{nope}}", values.get, "template train args")
    with pytest.raises(ExprError, match="expression tags"):
        substitute("{{=1+1}}", values.get, "w")


def test_backoff_durations() -> None:
    def seconds(value: object) -> float:
        return backoff_seconds({"duration": value}, "duration", "template t")

    assert seconds("15s") == 15
    assert seconds("10m") == 600
    assert seconds("1h30m") == 5400
    assert seconds(7) == 7
    assert seconds("7") == 7
    assert seconds("250ms") == 0.25
    assert seconds(None) == seconds("") == 0
    with pytest.raises(ExprError, match=r"template t\.retryStrategy\.backoff\.duration: 'soon'"):
        seconds("soon")

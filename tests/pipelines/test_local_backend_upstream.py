"""Upstream Argo examples (../shared/argo/examples) whose commands exist here run to Argo's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends.local import RunResult, UnsupportedError, run_workflow
from tests.conftest import SHARED_ARGO

EXAMPLES = SHARED_ARGO / "examples"


def run_example(name: str, tmp_path: Path, **kwargs: Any) -> RunResult:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    return run_workflow(
        doc, run_dir=tmp_path / "run", shared_root=tmp_path / "shared", progress=False, **kwargs
    )


def log(result: RunResult, node: str, attempt: int = 0) -> str:
    return (result.run_dir / "logs" / f"{node}-{attempt}.log").read_text()


def phases(result: RunResult) -> dict[str, str]:
    return {n.name: n.phase for n in result.nodes.values() if n.name != result.name}


def test_dag_diamond(tmp_path: Path) -> None:
    r = run_example("dag-diamond.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert {n: log(r, n).strip() for n in "ABCD"} == {n: n for n in "ABCD"}
    d, b, c = r.nodes["D"], r.nodes["B"], r.nodes["C"]
    assert d.started is not None and d.started >= max(b.finished or 0, c.finished or 0)


def test_steps_run_groups_in_order(tmp_path: Path) -> None:
    r = run_example("steps.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert [log(r, n).strip() for n in ("hello1", "hello2a", "hello2b")] == [
        "hello1",
        "hello2a",
        "hello2b",
    ]
    assert (r.nodes["hello1"].finished or 0) <= min(
        r.nodes["hello2a"].started or 0, r.nodes["hello2b"].started or 0
    )


def test_loops_dag_with_items(tmp_path: Path) -> None:
    r = run_example("loops-dag.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert sorted(log(r, f"B({i})").strip() for i in range(3)) == ["bar", "baz", "foo"]
    assert (r.nodes["C"].started or 0) >= max(r.nodes[f"B({i})"].finished or 0 for i in range(3))


def test_loops_sequence(tmp_path: Path) -> None:
    r = run_example("loops-sequence.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert [log(r, f"sequence-count({i})").strip() for i in range(5)] == list("01234")
    assert [log(r, f"sequence-negative({i})").strip() for i in range(6)] == list("543210")
    assert [log(r, f"sequence-param({i})").strip() for i in range(3)] == ["200", "201", "202"]


def test_scripts_python_result_flows_to_the_next_step(tmp_path: Path) -> None:
    r = run_example("scripts-python.yaml", tmp_path)
    assert r.status == "Succeeded"
    number = r.nodes["generate"].result
    assert number is not None and 1 <= int(number) <= 100
    assert log(r, "print").strip() == f"result was: {number}"


def test_output_parameter_read_from_a_file(tmp_path: Path) -> None:
    r = run_example("output-parameter.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert r.nodes["generate-parameter"].outputs == {"hello-param": "hello world"}
    assert log(r, "consume-parameter").strip() == "hello world"


def test_exit_handler_after_an_intentional_failure(tmp_path: Path) -> None:
    r = run_example("exit-handlers.yaml", tmp_path)
    assert r.status == "Failed"
    p = phases(r)
    assert p["onExit.notify"] == "Succeeded" and p["onExit.cry"] == "Succeeded"
    assert p["onExit.celebrate"] == "Skipped"
    assert log(r, "onExit.cry").strip() == "boohoo!"
    assert f"send e-mail: {r.name} Failed" in log(r, "onExit.notify")


def test_enhanced_depends(tmp_path: Path) -> None:
    r = run_example("dag-enhanced-depends.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert phases(r) == {
        "A": "Succeeded",
        "B": "Succeeded",
        "C": "Failed",
        "should-execute-1": "Succeeded",
        "should-execute-2": "Succeeded",
        "should-not-execute": "Omitted",
        "should-execute-3": "Succeeded",
    }


def test_continue_on_failed_and_exit_code_variable(tmp_path: Path) -> None:
    r = run_example("exit-code-output-variable.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert r.nodes["failing-container"].phase == "Failed"
    assert log(r, "echo-container").strip() == "Exit code was: 123"


def test_dag_continue_on_fail_fails_the_workflow(tmp_path: Path) -> None:
    r = run_example("dag-continue-on-fail.yaml", tmp_path)
    assert r.status == "Failed"  # G is omitted after E failed: its branch fails the DAG
    p = phases(r)
    assert p["D"] == "Succeeded" and p["G"] == "Omitted" and p["E"] == "Failed"


def test_coinflip_when(tmp_path: Path) -> None:
    r = run_example("coinflip.yaml", tmp_path)
    assert r.status == "Succeeded"
    side = r.nodes["flip-coin"].result
    other = {"heads": "tails", "tails": "heads"}[str(side)]
    assert r.nodes[str(side)].phase == "Succeeded" and r.nodes[other].phase == "Skipped"
    assert log(r, str(side)).strip() == f"it was {side}"


def test_parameter_aggregation_of_json_results(tmp_path: Path) -> None:
    r = run_example("parameter-aggregation-script.yaml", tmp_path)
    assert r.status == "Succeeded"
    assert [n.phase for n in r.pods("divide-by-2")] == ["Succeeded", "Succeeded"]


@pytest.mark.parametrize(
    ("example", "field"),
    [
        ("artifact-passing.yaml", "spec.templates[1].outputs.artifacts"),
        ("k8s-jobs.yaml", "spec.templates[0].resource"),
        ("volumes-pvc.yaml", "spec.volumeClaimTemplates"),
    ],
)
def test_unsupported_example_fails_with_the_field_name(
    tmp_path: Path, example: str, field: str
) -> None:
    with pytest.raises(UnsupportedError) as err:
        run_example(example, tmp_path)
    assert field in [p for p, _ in err.value.problems]
    assert field in str(err.value)
    assert not (tmp_path / "run").exists()


def test_expression_tags_beyond_the_local_subset_are_named_before_anything_runs(
    tmp_path: Path,
) -> None:
    with pytest.raises(UnsupportedError) as err:
        run_example("conditionals.yaml", tmp_path)
    named = {path: why for path, why in err.value.problems}
    assert "jsonpath" in named["spec.templates[0].steps[0][2].when"]
    assert all("not evaluated locally" in why for why in named.values())
    assert not (tmp_path / "run").exists()

"""The local backend runs small hand-written manifests (tests/manifests/local/) to Argo's outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends.local import RunResult, UnsupportedError, run_workflow
from tests.conftest import REPO

MANIFESTS = Path(__file__).parents[1] / "manifests" / "local"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((MANIFESTS / name).read_text())


def run(name: str, tmp_path: Path, **kwargs: Any) -> RunResult:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("cwd", tmp_path)
    return run_workflow(
        load(name), run_dir=tmp_path / "run", shared_root=tmp_path / "shared", **kwargs
    )


def scratch(tmp_path: Path) -> Path:
    """The local folder of the manifests' claim ``scratch``."""
    return tmp_path / "shared" / "scratch"


def test_fan_out_over_a_parameter_list_and_items(tmp_path: Path) -> None:
    result = run("fanout.yaml", tmp_path, parameters={"items": '["x", "y", "z", "w"]'})

    assert result.status == "Succeeded"
    out = scratch(tmp_path) / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "item-one",
        "item-two",
        "param-w",
        "param-x",
        "param-y",
        "param-z",
    ]
    assert (out / "param-x").read_text().strip() == result.name
    assert result.name.startswith("fanout-") and len(result.name) == len("fanout-") + 5
    assert {n.name for n in result.pods()} == {f"each({i})" for i in range(4)} | {
        "literal(0)",
        "literal(1)",
    }
    for node in result.pods():
        assert (tmp_path / "run" / "logs" / f"{node.name}-0.log").exists()


def test_outputs_pass_between_tasks_and_aggregate_over_a_fan_out(tmp_path: Path) -> None:
    result = run("outputs.yaml", tmp_path)

    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    produce = result.nodes["produce"]
    assert produce.outputs == {"word": "hello", "numbers": "[2, 3, 4]"}
    assert produce.result == "stdout says hi"
    word, said, squares = (scratch(tmp_path) / "consumed").read_text().split("|")
    assert (word, said) == ("hello", "stdout says hi")
    assert sorted(json.loads(squares), key=int) == ["4", "9", "16"]
    # each attempt had its own outputs folder: nothing was written to the real /tmp/outputs
    assert (tmp_path / "run" / "outputs" / "square(1)-0" / "sq").read_text().strip() == "9"


@pytest.mark.parametrize(("code", "status"), [("1", "Failed"), ("0", "Succeeded")])
def test_on_exit_runs_after_a_failure_and_sees_the_status(
    tmp_path: Path, code: str, status: str
) -> None:
    result = run("onexit.yaml", tmp_path, parameters={"code": code})

    assert result.status == status
    assert (scratch(tmp_path) / "exit-status").read_text().split() == [result.name, status]
    if status == "Failed":
        assert result.nodes["work"].exit_code == 1
        assert result.nodes["after"].phase == "Omitted"
    assert result.nodes[f"{result.name}.onExit"].phase == "Succeeded"


@pytest.mark.parametrize(("code", "attempts"), [("3", 1), ("1", 4)])
def test_retry_expression_decides(tmp_path: Path, code: str, attempts: int) -> None:
    result = run("retry.yaml", tmp_path, parameters={"code": code}, backoff_scale=0.05)

    assert result.status == "Failed"
    node = result.nodes["try"]
    assert [a.exit_code for a in node.attempts] == [int(code)] * attempts
    lines = (scratch(tmp_path) / "attempts").read_text().split("\n")
    assert [ln for ln in lines if ln] == [f"attempt {i}" for i in range(attempts)]
    if code == "3":
        assert "expression evaluated to false" in node.message
    else:
        assert "no more retries left" in node.message
        # backoff 1s x 2^n, scaled by 0.05: 0.05 + 0.1 + 0.2 s between the attempts at least
        ends = [a.finished or 0.0 for a in node.attempts]
        gaps = [b.started - end for end, b in zip(ends, node.attempts[1:], strict=False)]
        assert gaps[0] >= 0.05 and gaps[2] >= 0.2


def max_concurrency(folder: Path) -> int:
    spans = [tuple(map(float, p.read_text().split())) for p in folder.glob("ts-*")]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = best = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


@pytest.mark.parametrize(("manifest", "limit", "steps"), [
    ("parallelism.yaml", 3, 8),
    ("parallelism-template.yaml", 2, 6),
])  # fmt: skip
def test_parallelism_limits_concurrency(
    tmp_path: Path, manifest: str, limit: int, steps: int
) -> None:
    result = run(manifest, tmp_path)

    assert result.status == "Succeeded"
    assert len(list(scratch(tmp_path).glob("ts-*"))) == steps
    assert max_concurrency(scratch(tmp_path)) == limit


@pytest.mark.parametrize("level", ["workflow", "template"])
def test_parallelism_one_runs_a_fan_out_in_its_items_order(tmp_path: Path, level: str) -> None:
    """Argo's controller starts a fan-out's pods in item order; so must the local run (a sweep with
    ``parallelism: 1`` runs its trials in the plan's order, and a failure budget stops the rest)."""
    manifest = load("parallelism.yaml")
    manifest["spec"].pop("parallelism")
    owner = manifest["spec"] if level == "workflow" else manifest["spec"]["templates"][0]
    owner["parallelism"] = 1
    source = manifest["spec"]["templates"][1]["script"]["source"]
    manifest["spec"]["templates"][1]["script"]["source"] = source.replace("0.5", "0.05")
    result = run_workflow(manifest, run_dir=tmp_path / "run", shared_root=tmp_path / "shared",
                          cwd=tmp_path, progress=False)  # fmt: skip

    assert result.status == "Succeeded"
    starts = [float((scratch(tmp_path) / f"ts-{i}").read_text().split()[0]) for i in range(8)]
    assert starts == sorted(starts), starts


def test_secrets_from_env_dotenv_and_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.delenv("OPTIONAL_DSN", raising=False)
    with pytest.raises(UnsupportedError) as err:
        run("secrets.yaml", tmp_path)
    assert "API_TOKEN" in str(err.value) and "app-secrets/api-token" in str(err.value)
    assert not (tmp_path / "run" / "logs").exists()  # nothing ran

    (tmp_path / ".env").write_text("API_TOKEN=from-dotenv\n")
    assert run("secrets.yaml", tmp_path).ok
    assert (scratch(tmp_path) / "seen").read_text() == "from-dotenv|unset"

    monkeypatch.setenv("API_TOKEN", "from-environ")
    monkeypatch.setenv("OPTIONAL_DSN", "dsn-value")
    assert run("secrets.yaml", tmp_path).ok
    assert (scratch(tmp_path) / "seen").read_text() == "from-environ|dsn-value"
    # the secret is nowhere in the run's records
    assert "from-environ" not in (tmp_path / "run" / "run.json").read_text()


def test_unsupported_fields_are_named_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError) as err:
        run("unsupported.yaml", tmp_path)

    paths = [p for p, _ in err.value.problems]
    assert "spec.templates[1].sidecars" in paths
    assert "spec.templates[1].outputs.artifacts" in paths
    assert not (scratch(tmp_path) / "ran").exists()
    assert not (tmp_path / "run").exists()


def test_preemption_is_an_error_and_the_retry_strategy_resumes(tmp_path: Path) -> None:
    result = run("preempt.yaml", tmp_path, chaos=1.0, seed=7, chaos_window=5.0)

    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    polite, stubborn = result.nodes["polite"], result.nodes["stubborn"]
    assert polite.attempts[0].phase == "Error" and polite.attempts[0].preempted
    assert polite.attempts[0].exit_code == 143  # handled SIGTERM, saved, exited 143
    assert (scratch(tmp_path) / "polite-saved").read_text().strip() == "saved"
    assert stubborn.attempts[0].exit_code == 137  # ignored SIGTERM: SIGKILL after the 1 s grace
    assert (stubborn.attempts[0].finished or 0) - stubborn.attempts[0].started >= 1.0
    for node in (polite, stubborn):
        assert [a.phase for a in node.attempts] == ["Error", "Succeeded"]
        assert node.preemptions == 1


def test_workflow_deadline_stops_the_run_and_the_exit_handler_still_runs(tmp_path: Path) -> None:
    doc = load("onexit.yaml")
    doc["spec"]["activeDeadlineSeconds"] = 1
    doc["spec"]["templates"][1]["container"]["command"] = ["sh", "-c", "sleep 30"]
    started = time.monotonic()
    result = run_workflow(
        doc, run_dir=tmp_path / "run", shared_root=tmp_path / "shared", progress=False
    )

    assert time.monotonic() - started < 15
    assert result.status == "Failed"
    assert "activeDeadlineSeconds" in result.message
    assert (scratch(tmp_path) / "exit-status").read_text().split()[1] == "Failed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; reaped or not, it must not be "R"/"S"
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_ctrl_c_stops_every_child_and_marks_the_run_failed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", str(MANIFESTS / "interrupt.yaml"),
         "--shared", str(shared), "--run-dir", str(run_dir), "--no-progress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    pid_files = [shared / "scratch" / f"pids-{i}" for i in "abc"]
    deadline = time.monotonic() + 60
    while not all(p.exists() and p.read_text().strip() for p in pid_files):
        assert proc.poll() is None, "the runner exited early"
        assert time.monotonic() < deadline, "steps did not start"
        time.sleep(0.1)
    pids = [int(x) for p in pid_files for x in p.read_text().split()]
    assert all(_alive(pid) for pid in pids)

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130

    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if _alive(pid)] == []
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "Failed"
    phases = {n["name"]: n["phase"] for n in state["nodes"]}
    assert {phases[f"long({i})"] for i in range(3)} == {"Failed"}
    assert phases["never"] == "Omitted"


def test_progress_lines_and_summary_when_stdout_is_not_a_tty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run("retry.yaml", tmp_path, parameters={"code": "3"}, progress=True)

    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert any("try" in ln and "Running" in ln and "attempt 1" in ln for ln in lines)
    assert any("try" in ln and "Failed" in ln and "exit 3" in ln for ln in lines)
    assert f"workflow {result.name} Failed" in out
    assert str(tmp_path / "run" / "logs") in out


def test_cli_exit_codes_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.backends.local.cli import main

    args = ["--shared", str(tmp_path / "shared"), "--no-progress"]
    ok = ["--run-dir", str(tmp_path / "ok"), *args]
    assert main([str(MANIFESTS / "onexit.yaml"), "-p", "code=0", *ok]) == 0
    bad = ["--run-dir", str(tmp_path / "bad"), *args]
    assert main([str(MANIFESTS / "onexit.yaml"), "-p", "code=2", *bad]) == 1
    assert main([str(MANIFESTS / "onexit.yaml"), "-p", "colour=red", *args]) == 2
    assert "parameter colour: not a workflow parameter (known: code)" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml"), *args]) == 2
    assert "cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(MANIFESTS / "onexit.yaml"), "--chaos", "1.5"])


def test_a_depends_on_an_unknown_task_is_named_before_anything_runs(tmp_path: Path) -> None:
    doc = load("onexit.yaml")
    doc["spec"]["templates"][0]["dag"]["tasks"][1]["depends"] = "work && (wokr.Succeeded)"
    with pytest.raises(UnsupportedError) as err:
        run_workflow(doc, run_dir=tmp_path / "run", shared_root=tmp_path / "s", progress=False)
    assert [(path, "'wokr'" in why) for path, why in err.value.problems] == [
        ("spec.templates[0].dag.tasks[1].depends", True)
    ]
    assert not (tmp_path / "run").exists()


def test_stdout_is_logged_whole_and_the_result_keeps_its_tail(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "chatty"},
        "spec": {
            "entrypoint": "talk",
            "templates": [
                {
                    "name": "talk",
                    "script": {
                        "image": "python:3.12",
                        "command": ["python"],
                        "source": "import sys\nfor i in range(5000): print(f'{i:06d}' * 10)\n"
                        "print('bye', file=sys.stderr)\n",
                    },
                }
            ],
        },
    }
    result = run_workflow(doc, run_dir=tmp_path / "run", shared_root=tmp_path / "s", progress=False)

    assert result.ok
    log_text = (tmp_path / "run" / "logs" / "chatty-0.log").read_text()
    assert log_text.count("\n") == 5001 and "bye" in log_text
    tail = result.nodes["chatty"].result or ""
    assert 250_000 < len(tail) <= 256 * 1024 and tail.endswith("004999" * 10)


def _empty_fan_out(depends: str) -> dict[str, Any]:
    say = {"image": "python:3", "command": [sys.executable, "-c", "print('hi')"]}
    make = {"image": "python:3", "command": [sys.executable, "-c", "print('[]')"]}
    item = {
        "image": "python:3",
        "command": [sys.executable, "-c", "print('{{inputs.parameters.x}}')"],
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "empty-fan-out"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": [
                    {"name": "list", "template": "make"},
                    {"name": "each", "template": "item", "depends": "list",
                     "withParam": "{{tasks.list.outputs.result}}",
                     "arguments": {"parameters": [{"name": "x", "value": "{{item}}"}]}},
                    {"name": "after", "template": "say", "depends": depends},
                ]}},
                {"name": "make", "container": make},
                {"name": "item", "inputs": {"parameters": [{"name": "x"}]}, "container": item},
                {"name": "say", "container": say},
            ],
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("depends", "after"),
    [
        ("each.AnySucceeded || each.AllFailed", "Omitted"),
        ("each.AnySucceeded || each.AllFailed || each.Skipped", "Succeeded"),
        ("each", "Succeeded"),
    ],
)
def test_a_fan_out_over_no_items_is_skipped_as_argo_does(
    tmp_path: Path, depends: str, after: str
) -> None:
    # Argo's DAG: a withParam of [] is one node of type Skipped ("Skipped, empty params"), no
    # group, so AnySucceeded and AllFailed never hold for it; Skipped (and a plain name) do.
    result = run_workflow(
        _empty_fan_out(depends), run_dir=tmp_path / "run", shared_root=tmp_path / "shared",
        progress=False,
    )  # fmt: skip
    each = result.nodes["each"]
    assert (each.kind, each.phase, each.message) == ("Skipped", "Skipped", "Skipped, empty params")
    assert not each.children
    assert result.nodes["after"].phase == after
    assert result.status == "Succeeded"

"""A resubmitted sweep whose trials all finished: no trial trains again, compare replays its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components import compare as compare_mod
from components.contract import trial_dir
from tests.support.compare import make_sweep
from tests.support.train import REPO, make_data, run_train, train_cmd, train_env, trial_params


def test_a_finished_trial_exits_before_importing_torch(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    env = train_env(tmp_path / "shared", None)
    params = trial_params(steps=20)
    assert run_train(params, data, env).returncode == 0
    again = subprocess.run(
        [sys.executable, "-X", "importtime", *train_cmd(params, data)[1:]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already done: nothing to train" in again.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in again.stderr.splitlines()}
    assert "torch" not in imported and "mlflow" not in imported
    attempts = (trial_dir(tmp_path / "shared", "s1", _tid(params)) / "attempts.jsonl").read_text()
    assert attempts.count('"start"') == 1  # the skip left no attempt behind


def _tid(params: dict[str, object]) -> str:
    from components.contract import trial_id

    return trial_id(params)


def test_compare_replays_its_summary_until_something_changes(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-again", mlflow_experiment=tracking)
    monkeypatch.setenv("SWEEPYARD_SHARED", str(shared))
    monkeypatch.setenv("SWEEPYARD_OUTPUTS", str(outputs))
    argv = ["--sweep-id", "sweep-again", "--objective", "val_loss", "--direction", "minimize",
            "--model-name", "", "--budget", json.dumps({"max_failed_trials": 2})]  # fmt: skip
    assert compare_mod.main(argv) == 0
    first = capsys.readouterr().out
    summary = json.loads((outputs / "summary").read_text())
    (outputs / "summary").unlink()
    t0 = time.monotonic()
    assert compare_mod.main(argv) == 0
    again = capsys.readouterr().out
    assert time.monotonic() - t0 < 2.0
    assert "nothing changed since sweep sweep-again was compared" in again
    assert json.loads((outputs / "summary").read_text()) == summary  # the output, written again
    board = first[first.index("| rank") : first.index("\nplots:")]
    assert board in again  # the same leaderboard
    result = trial_dir(shared, "sweep-again", ids[(0.003, 32)]) / "result.json"
    os.utime(result, ns=(time.time_ns(), time.time_ns()))  # that trial ran again
    assert compare_mod.main(argv) == 0
    assert "nothing changed" not in capsys.readouterr().out
    argv[argv.index("--budget") + 1] = json.dumps({"max_failed_trials": 0})
    assert compare_mod.main(argv) == 1  # another budget: compared again, and now over it
    assert "nothing changed" not in capsys.readouterr().out


def _submit(root: Path, sweep_id: str) -> int:
    from pipelines.backends.local import cli as local_cli
    from tests.support.local_sweep import manifest

    return local_cli.submit(manifest(), sweep_id=sweep_id, chaos=0.0, project_root=root)


def _last_run(root: Path, but: set[str]) -> dict[str, object]:
    (run_dir,) = [p for p in (root / ".sweepyard" / "runs").iterdir() if p.name not in but]
    return dict(json.loads((run_dir / "run.json").read_text()))


def _starts(sweep: Path) -> dict[str, int]:
    return {
        t.name: (t / "attempts.jsonl").read_text().count('"start"')
        for t in (sweep / "trials").iterdir()
    }


@pytest.mark.slow
def test_a_finished_sweep_submitted_again_starts_no_trial_and_no_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the local backend's own MLflow server (lazy, over <project>/.sweepyard/mlflow), as make submit
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SWEEPYARD_SHARED", raising=False)
    assert _submit(tmp_path, "again") == 0
    first = _last_run(tmp_path, set())
    assert "started the local MLflow server" in capsys.readouterr().out
    sweep = tmp_path / ".sweepyard" / "shared" / "sweepyard-shared" / "sweeps" / "again"
    trials = [t["id"] for t in json.loads((sweep / "plan.json").read_text())]
    starts = _starts(sweep)
    assert sorted(starts) == sorted(trials) and set(starts.values()) == {1}

    assert _submit(tmp_path, "again") == 0
    out = capsys.readouterr().out
    state = _last_run(tmp_path, {str(first["name"])})
    nodes = {str(n["name"]): n for n in state["nodes"]}  # type: ignore[attr-defined]
    # the plan handed out no trial: Argo's Skipped fan-out, no train process, compare after it
    assert [n for n in nodes.values() if n["template"] == "train" and n["type"] == "Pod"] == []
    assert (nodes["train"]["type"], nodes["train"]["phase"]) == ("Skipped", "Skipped")
    assert nodes["compare"]["phase"] == "Succeeded" and state["status"] == "Succeeded"
    assert _starts(sweep) == starts  # no attempt anywhere
    assert (
        "nothing changed since sweep again was compared"
        in (
            Path(str(state["shared_root"])).parent
            / "runs"
            / str(state["name"])
            / "logs"
            / "compare-0.log"
        ).read_text()
    )
    assert "no step of this run used it, so no server was started" in out
    assert "started the local MLflow server" not in out
    # the live lines and the final table say the same of every trial: Skipped, done before
    live, final = out.split("workflow " + str(state["name"]) + " Succeeded")[0].split(
        str(state["name"]) + ": Succeeded"
    )
    for trial in trials:
        for shown in (live, final):
            (line,) = [row for row in shown.splitlines() if trial in row]
            assert "Skipped" in line and "done in an earlier run" in line, line
    assert "Succeeded attempt" not in "".join(r for r in live.splitlines() if "trial " in r)

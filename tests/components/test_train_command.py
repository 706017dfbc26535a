"""The command contract: a program that never imports the project, supervised by ``components.train``.

The program lives outside the repository, on ``PATH`` (as a team's own trainer would), reads its
trial from the environment, resumes from ``$SWEEPYARD_CHECKPOINT_DIR`` and appends metrics lines.
"""

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

from components.contract import trial_id
from tests.support.train import (
    REPO,
    assert_each_step_once,
    metric_steps,
    mlflow_trial_runs,
    tb_scalars,
    train_env,
    trial_path,
)

PROGRAM = """#!{python}
import json, os, sys, time
params = json.loads(os.environ["SWEEPYARD_PARAMS"])
lr = float(sys.argv[sys.argv.index("--lr") + 1])
steps = params["steps"]
ckpt = os.path.join(os.environ["SWEEPYARD_CHECKPOINT_DIR"], "state.json")
start, w = 0, 1.0
if os.path.exists(ckpt):
    with open(ckpt) as f:
        saved = json.load(f)
    start, w = saved["step"], saved["w"]
with open(os.path.join(os.environ["SWEEPYARD_CHECKPOINT_DIR"], "..", "env.json"), "w") as f:
    json.dump({{k: v for k, v in os.environ.items() if k.startswith("SWEEPYARD_")}}, f)
metrics = open(os.environ["SWEEPYARD_METRICS"], "a")
if start:
    metrics.write(json.dumps({{"step": start, "loss": -1.0}}) + "\\n")  # a rewrite: skipped
for step in range(start + 1, steps + 1):
    w = w * (1 - lr)
    record = {{"step": step, "loss": w}}
    if params.get("report", True) is False:
        record = {{"step": step, "other": w}}
    metrics.write(json.dumps(record) + "\\n")
    metrics.flush()
    if step % 5 == 0:
        with open(ckpt + ".tmp", "w") as f:
            json.dump({{"step": step, "w": w}}, f)
        os.replace(ckpt + ".tmp", ckpt)
    time.sleep(params.get("delay", 0.0))
with open(os.path.join(os.environ["SWEEPYARD_MODEL_DIR"], "weights.json"), "w") as f:
    json.dump({{"w": w}}, f)
sys.exit(params.get("exit", 0))
"""


def install_program(tmp_path: Path) -> Path:
    """``sweepyard-counter`` in a bin folder outside the repository; returns the folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "sweepyard-counter"
    program.write_text(PROGRAM.format(python=sys.executable))
    program.chmod(0o755)
    return bin_dir


def command_cmd(params: dict[str, Any], data: Path, command: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "components.train",
        "--trainer-command", json.dumps(command),
        "--sweep-id", "s1", "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--data", str(data), "--objective", "loss", "--max-app-errors", "2",
    ]  # fmt: skip


COUNTER = ["sweepyard-counter", "--lr", "{lr}"]


def expected(lr: float, steps: int) -> float:
    w = 1.0
    for _ in range(steps):
        w = w * (1 - lr)
    return w


def run(tmp_path: Path, params: dict[str, Any], uri: str | None, command: list[str] = COUNTER):
    env = train_env(tmp_path / "shared", uri)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    cmd = command_cmd(params, tmp_path, command)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_program_on_path_trains_and_each_metric_step_is_relayed_once(
    tmp_path: Path, mlflow_server: Any
) -> None:
    install_program(tmp_path)
    params = {"lr": 0.1, "steps": 12, "delay": 0.02}
    proc = run(tmp_path, params, mlflow_server.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = trial_path(tmp_path / "shared", params)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 12
    assert result["objective"]["value"] == result["metrics"]["loss"] == expected(0.1, 12)
    env = json.loads((tdir / "env.json").read_text())
    assert json.loads(env["SWEEPYARD_PARAMS"]) == params
    assert env["SWEEPYARD_TRIAL_ID"] == trial_id(params) and env["SWEEPYARD_ATTEMPT"] == "1"
    assert env["SWEEPYARD_DATA"] == str(tmp_path)
    assert Path(env["SWEEPYARD_CHECKPOINT_DIR"]) == tdir / "checkpoints"
    assert json.loads((tdir / "model" / "weights.json").read_text()) == {"w": expected(0.1, 12)}
    run_id = result["run_id"]
    assert metric_steps(mlflow_server.url, run_id, "loss") == list(range(1, 13))
    tb = tmp_path / "shared" / "tensorboard" / "s1" / trial_id(params)
    assert [s for s, _ in tb_scalars(tb, "loss")] == list(range(1, 13))


@pytest.mark.slow
def test_sigterm_is_passed_on_and_the_resumed_program_relays_each_step_once(
    tmp_path: Path, mlflow_server: Any
) -> None:
    install_program(tmp_path)
    params = {"lr": 0.05, "steps": 40, "delay": 0.05}
    env = train_env(tmp_path / "shared", mlflow_server.url, SWEEPYARD_GRACE_SECONDS="5")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    tdir = trial_path(tmp_path / "shared", params)
    metrics = tdir / "metrics.jsonl"
    for _ in range(2):
        size = metrics.stat().st_size if metrics.exists() else 0
        proc = subprocess.Popen(command_cmd(params, tmp_path, COUNTER), cwd=REPO, env=env)
        deadline = time.monotonic() + 60  # until this attempt's program wrote 8 lines or more
        while time.monotonic() < deadline and (
            not metrics.exists() or metrics.read_bytes()[size:].count(b"\n") < 8
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    final = subprocess.run(command_cmd(params, tmp_path, COUNTER), cwd=REPO, env=env, timeout=120)
    assert final.returncode == 0
    result = json.loads((tdir / "result.json").read_text())
    assert result["preemptions"] == 2 and result["attempts"] == 3
    assert result["metrics"]["loss"] == expected(0.05, 40)
    runs = mlflow_trial_runs(mlflow_server.url, "s1", trial_id(params))
    assert len(runs) == 1
    steps = metric_steps(mlflow_server.url, runs[0].info.run_id, "loss")
    assert_each_step_once(steps, list(range(1, 41)), "mlflow")
    tb = tmp_path / "shared" / "tensorboard" / "s1" / trial_id(params)
    scalars = tb_scalars(tb, "loss")
    assert_each_step_once([s for s, _ in scalars], list(range(1, 41)), "tensorboard")
    assert all(v > 0 for _, v in scalars)  # the resumed program's rewrite (-1.0) was skipped


def test_what_ends_a_command_trial(tmp_path: Path) -> None:
    install_program(tmp_path)
    shared = tmp_path / "shared"
    # Not found: give up at once (exit 3), naming the command.
    params = {"lr": 0.1, "steps": 3}
    t0 = time.monotonic()
    proc = run(tmp_path, params, None, ["no-such-trainer", "{lr}"])
    assert proc.returncode == 3 and time.monotonic() - t0 < 60
    error = json.loads((trial_path(shared, params) / "result.json").read_text())["error"]
    assert "no-such-trainer" in error
    # A placeholder that no param fills.
    params = {"lr": 0.2, "steps": 3}
    proc = run(tmp_path, params, None, ["sweepyard-counter", "--lr", "{eta}"])
    assert proc.returncode == 3 and "{eta}" in proc.stderr
    # Non-zero exit: an application error (retried), then the budget is spent.
    params = {"lr": 0.1, "steps": 3, "exit": 2}
    assert run(tmp_path, params, None).returncode == 1
    assert run(tmp_path, params, None).returncode == 3
    # Finished without the objective metric: the trial fails naming it.
    params = {"lr": 0.1, "steps": 3, "report": False}
    proc = run(tmp_path, params, None)
    assert proc.returncode == 3
    error = json.loads((trial_path(shared, params) / "result.json").read_text())["error"]
    assert "objective metric 'loss'" in error and "other" in error

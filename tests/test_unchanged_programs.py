"""Programs that know nothing of sweepyard, supervised by ``components.train`` with only YAML's say.

The programs are ``examples/programs/`` (argparse, prints, TensorBoard's ``SummaryWriter()``, files in
the current folder): each is run unchanged through the supervisor with the collector the sweep
config would give it, against a real MLflow server, and read back with TensorBoard's own reader.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from components.contract import trial_id
from tests.support.programs import FREEFORM
from tests.support.train import (
    REPO,
    assert_each_step_once,
    metric_steps,
    tb_scalars,
    train_env,
    trial_path,
)

PROGRAMS = REPO / "examples" / "programs"
METRICS = ["loss", "val_loss", "val_accuracy"]


def supervisor(
    params: dict[str, Any], command: list[str], collect: dict[str, Any] | None, *extra: str
) -> list[str]:
    return [
        sys.executable, "-m", "components.train",
        "--trainer-command", json.dumps(command),
        *(["--collect", json.dumps(collect)] if collect is not None else []),
        "--sweep-id", "s1", "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--objective", "val_loss", "--max-app-errors", "2", *extra,
    ]  # fmt: skip


def stdout_command(epochs: int, sleep: float) -> list[str]:
    return [
        "python", "-u", "examples/programs/mlp_stdout.py", "--lr", "{lr}", "--hidden", "{hidden}",
        "--epochs", str(epochs), "--sleep", str(sleep),
    ]  # fmt: skip


def collected_steps(tdir: Path) -> int:
    path = tdir / "collected.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def interrupt_after(
    cmd: list[str], env: dict[str, str], tdir: Path, lines: int, sig: int
) -> subprocess.CompletedProcess[str]:
    """Start the supervisor, send ``sig`` once ``collected.jsonl`` has ``lines`` more lines."""
    before = collected_steps(tdir)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 90
    while collected_steps(tdir) < before + lines:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the program never reported"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def finish(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def test_a_name_value_program_resumes_from_its_relative_checkpoint_each_step_once(
    tmp_path: Path, mlflow_server: Any
) -> None:
    """Katib's ``name=value`` lines, SIGTERM mid-run: the program resumes from the checkpoint it
    keeps in its working folder, and MLflow and TensorBoard hold each epoch once."""
    params = {"lr": 0.1, "hidden": 16}
    env = train_env(tmp_path / "shared", mlflow_server.url, SWEEPYARD_GRACE_SECONDS="5")
    collect = {"stdout": "name=value", "only": METRICS}
    cmd = supervisor(params, stdout_command(30, 0.05), collect, "--model", "model.pt")
    tdir = trial_path(tmp_path / "shared", params)
    first = interrupt_after(cmd, env, tdir, 10, signal.SIGTERM)
    assert first.returncode == 143, first.stdout[-3000:]
    assert "step=" in first.stdout  # the program's output still reaches the step's log
    done = finish(cmd, env)
    assert "resuming from epoch" in done.stdout
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 30 and result["preemptions"] == 1
    assert result["lost_steps"] <= 1  # a checkpoint every epoch: at most the one cut short
    assert_each_step_once(metric_steps(mlflow_server.url, result["run_id"], "val_loss"),
                          list(range(1, 31)), "mlflow")  # fmt: skip
    assert metric_steps(mlflow_server.url, result["run_id"], "lr") == []  # not a declared metric
    tb = tmp_path / "shared" / "tensorboard" / "s1" / trial_id(params)
    assert_each_step_once([s for s, _ in tb_scalars(tb, "val_accuracy")], list(range(1, 31)),
                          "tensorboard")  # fmt: skip
    work = tdir / "work"
    assert (work / "checkpoint.pt").is_file() and not (REPO / "checkpoint.pt").exists()
    saved = torch.load(tdir / "model" / "model.pt")
    assert saved["0.weight"].shape == (16, 64)  # the model the program left, kept as the trial's


def test_a_tensorboard_only_program_that_restarts_from_zero_reports_the_work_redone(
    tmp_path: Path, mlflow_server: Any
) -> None:
    params = {"lr": 0.1, "hidden": 16}
    env = train_env(tmp_path / "shared", mlflow_server.url, SWEEPYARD_GRACE_SECONDS="5")
    command = ["python", "-u", "examples/programs/mlp_tensorboard.py", "--lr", "{lr}",
               "--hidden", "{hidden}", "--epochs", "30", "--sleep", "0.05"]  # fmt: skip
    cmd = supervisor(params, command, {"tensorboard": "runs"})
    tdir = trial_path(tmp_path / "shared", params)
    first = interrupt_after(cmd, env, tdir, 12, signal.SIGTERM)
    assert first.returncode == 143
    finish(cmd, env)
    ends = [
        json.loads(line)
        for line in (tdir / "attempts.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "end"
    ]
    reached = ends[0]["step"]
    assert reached >= 12 and f"preempted at step {reached} " in ends[0]["error"]
    assert ends[1]["first_step"] == 1 and ends[1]["redone_steps"] == reached
    assert 0 < ends[1]["redone_seconds"] < ends[1]["seconds"]
    result = json.loads((tdir / "result.json").read_text())
    assert result["lost_steps"] == reached and result["lost_seconds"] > 0
    assert len(list((tdir / "work" / "runs").iterdir())) == 2  # one SummaryWriter() per attempt
    assert_each_step_once(metric_steps(mlflow_server.url, result["run_id"], "val_loss"),
                          list(range(1, 31)), "mlflow")  # fmt: skip
    tb = tmp_path / "shared" / "tensorboard" / "s1" / trial_id(params)
    assert_each_step_once([s for s, _ in tb_scalars(tb, "loss")], list(range(1, 31)),
                          "tensorboard")  # fmt: skip
    assert not any((tdir / "model").iterdir())  # it saves no model, and none is made up


def test_two_trials_of_a_program_writing_model_pt_never_see_each_others_file(
    tmp_path: Path,
) -> None:
    """Free-form lines matched by regexes; both trials save and reload ``model.pt`` at once."""
    env = train_env(tmp_path / "shared", None)
    command = ["python", "-u", "examples/programs/mlp_freeform.py", "--lr", "{lr}",
               "--hidden", "{hidden}", "--epochs", "25", "--save", "model.pt"]  # fmt: skip
    trials = [{"lr": 0.1, "hidden": 16}, {"lr": 0.1, "hidden": 48}]
    procs = [
        subprocess.Popen(supervisor(p, command, {"stdout": FREEFORM}), cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in trials
    ]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]
    for params in trials:
        result = json.loads((trial_path(tmp_path / "shared", params) / "result.json").read_text())
        assert result["metrics"]["evaluated_hidden"] == params["hidden"]
        assert result["step"] == 25 and result["metrics"]["val_loss"] > 0
        assert (trial_path(tmp_path / "shared", params) / "work" / "model.pt").is_file()
    assert not (REPO / "model.pt").exists()


def test_a_regex_that_never_matches_fails_the_trial_naming_the_metric_and_the_regex(
    tmp_path: Path,
) -> None:
    env = train_env(tmp_path / "shared", None)
    params = {"lr": 0.1, "hidden": 16}
    collect = {"stdout": {"val_loss": r"validation loss: ([\d.]+)"}}
    proc = subprocess.run(supervisor(params, stdout_command(3, 0.0), collect), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-2000:]
    error = json.loads((trial_path(tmp_path / "shared", params) / "result.json").read_text())
    assert "'val_loss' was never collected" in error["error"]
    assert r"validation loss: ([\d.]+)" in error["error"]


ENV_DUMP = """
import json, os, sys, tempfile
json.dump({"cwd": os.getcwd(), "argv": sys.argv[1:], "home": os.path.expanduser("~"),
           "tmp": tempfile.gettempdir(), "omp": os.environ.get("OMP_NUM_THREADS"),
           "mkl": os.environ.get("MKL_NUM_THREADS")}, open("env.json", "w"))
print("val_loss=0.5")
"""


@pytest.mark.parametrize(("threads", "preset"), [("1", None), ("1", "3")])
def test_a_program_runs_in_its_working_folder_with_the_placeholders_filled(
    tmp_path: Path, threads: str, preset: str | None
) -> None:
    env = train_env(tmp_path / "shared", None)
    if preset:
        env["OMP_NUM_THREADS"] = preset
    script = tmp_path / "dump.py"
    script.write_text(ENV_DUMP)
    params = {"lr": 0.5}
    command = ["python", str(script), "{lr}", "{data}", "{checkpoint_dir}", "{model_dir}",
               "{trial_id}", "{workdir}", "examples/programs"]  # fmt: skip
    cmd = [*supervisor(params, command, {"stdout": "name=value"}), "--threads", threads]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tdir = trial_path(tmp_path / "shared", params)
    seen = json.loads((tdir / "work" / "env.json").read_text())
    assert seen["cwd"] == str(tdir / "work") == seen["home"]
    assert seen["tmp"] == str(tdir / "work" / ".tmp")
    assert seen["argv"] == [
        "0.5",
        "",
        str(tdir / "checkpoints"),
        str(tdir / "model"),
        trial_id(params),
        str(tdir / "work"),
        str(REPO / "examples" / "programs"),
    ]  # no data: {data} is empty; a relative path of the command still names the repo's folder
    assert seen["omp"] == (preset or threads) and seen["mkl"] == threads

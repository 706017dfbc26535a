"""Command trainers and rank failures under torchrun: a command trainer's rank 0 stdout is collected,
a peer rank's own error counts as the trial's with its message, a command rank's own failure is an
app error and a killed rank a preemption.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from components.contract import trial_id
from tests.support.distributed import attempts, run, tdir_of
from tests.support.train import REPO, assert_each_step_once, tb_scalars, train_env


def test_a_command_trainer_runs_under_torchrun_and_rank_0s_stdout_is_collected(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    params = {"lr": 0.1, "steps": 15}
    command = ["python", "-u", "examples/programs/ddp_stdout.py", "--lr", "{lr}",
               "--steps", "{steps}"]  # fmt: skip
    cmd = [
        sys.executable, "-m", "components.train", "--sweep-id", "s1",
        "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--trainer-command", json.dumps(command), "--collect", json.dumps({"stdout": "name=value"}),
        "--objective", "loss", "--nproc-per-node", "2",
    ]  # fmt: skip
    proc = run(cmd, train_env(shared, None))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = tdir_of(shared, params)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["metrics"]["world_size"] == 2.0
    assert result["metrics"]["loss"] < 1.0
    tb = shared / "tensorboard" / "s1" / trial_id(params)
    assert_each_step_once([s for s, _ in tb_scalars(tb, "loss")], list(range(1, 16)), "tb")


FAILING = """
import torch
from components.api import GiveUp, Trial


def train(trial: Trial, *, steps: int = 8, fail_at: int = 3, give_up: bool = False) -> None:
    for step in range(trial.start_step, steps):
        if trial.rank == 1 and step + 1 == fail_at:
            raise GiveUp("rank 1's shard is empty") if give_up else ValueError("boom on rank 1")
        trial.log(step + 1, {"val_loss": 1.0 / (step + 1)})
        trial.checkpoint(step + 1, lambda: {"x": torch.zeros(1)})
"""


@pytest.mark.parametrize(("give_up", "code", "outcome"), [(False, 1, "app_error"), (True, 3, "gave_up")])  # fmt: skip
def test_a_peer_ranks_own_error_counts_as_the_trials_with_its_message(
    tmp_path: Path, give_up: bool, code: int, outcome: str
) -> None:
    (tmp_path / "failing_trainer.py").write_text(FAILING)
    shared = tmp_path / "shared"
    params = {"give_up": give_up}
    env = {**train_env(shared, None), "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    cmd = [
        sys.executable, "-m", "components.train", "--sweep-id", "s1",
        "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--trainer-function", "failing_trainer:train", "--nproc-per-node", "2",
        "--max-app-errors", "3",
    ]  # fmt: skip
    proc = run(cmd, env)
    assert proc.returncode == code, proc.stderr[-3000:]
    tdir = tdir_of(shared, params)
    end = attempts(tdir)[-1]
    assert end["outcome"] == outcome and end["exit_code"] == code, end
    assert "rank 1" in end["error"] and ("boom" in end["error"] or "empty" in end["error"])
    record = json.loads((tdir / "ranks" / "1" / "rank-1.json").read_text())
    assert record["rank"] == 1 and record["code"] == code


CRASHING = """
import os, signal, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, how = dist.get_rank(), sys.argv[1]
for step in range(1, 30):
    t = torch.ones(1)
    dist.all_reduce(t)
    if rank == 0:
        print(f"step={step} loss={1.0 / step}", flush=True)
    if rank == 1 and step == 3:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)  # the rank is lost (as with its node)
        os._exit(7)  # the program's own failure (sys.exit may end in gloo's teardown abort)
dist.destroy_process_group()
"""


@pytest.mark.parametrize(
    ("how", "code", "outcome"), [("kill", 143, "preempted"), ("crash", 1, "app_error")]
)
def test_a_command_ranks_own_failure_is_an_app_error_a_killed_rank_a_preemption(
    tmp_path: Path, how: str, code: int, outcome: str
) -> None:
    shared = tmp_path / "shared"
    program = tmp_path / "crashing.py"
    program.write_text(CRASHING)
    params = {"how": how}
    cmd = [
        sys.executable, "-m", "components.train", "--sweep-id", "s1",
        "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--trainer-command", json.dumps(["python", "-u", str(program), "{how}"]),
        "--collect", json.dumps({"stdout": "name=value"}), "--objective", "loss",
        "--nproc-per-node", "2",
    ]  # fmt: skip
    proc = run(cmd, train_env(shared, None))
    assert proc.returncode == code, proc.stderr[-3000:]
    [end] = [r for r in attempts(tdir_of(shared, params)) if r.get("event") == "end"]
    assert end["outcome"] == outcome, end
    if how == "crash":  # the error names the rank and how its program ended
        assert "rank 1" in end["error"] and "exited with 7" in end["error"], end


@pytest.mark.parametrize(
    ("program", "exit_code", "error"),
    [
        ("import os; os.abort()", 134, "rank 1: {python} died of SIGABRT"),
        ("import sys; sys.exit(7)", 7, "rank 1: {python} exited with 7"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 143, None),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, None),
    ],
)
def test_a_rank_that_aborts_failed_on_its_own_one_stopped_from_outside_did_not(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    program: str,
    exit_code: int,
    error: str | None,
) -> None:
    from components.runtime import rank_exit

    monkeypatch.setenv("RANK", "1")
    argv = [str(tmp_path), "2", "--", sys.executable, "-c", program]
    assert rank_exit.main(argv) == exit_code
    record = tmp_path / "ranks" / "2" / "rank-1.json"
    if error is None:  # a preemption or a lost node: no record, the supervisor counts a preemption
        assert not record.exists()
    else:  # the program's own failure (a library's abort included): an application error
        assert json.loads(record.read_text())["error"] == error.format(python=sys.executable)

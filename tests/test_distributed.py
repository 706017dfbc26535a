"""Distributed trials under torchrun (gloo on CPU): the launcher, rank 0's tracking, sharded
checkpoints, lost ranks, SIGTERM, and a command trainer under ``torchrun --no-python``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from components.contract import trial_id
from components.model import load_weights
from components.runtime import distributed
from components.runtime.distributed import AttemptEnd, Dist, Topology
from tests.support.kill import TOPICS
from tests.support.train import REPO, assert_each_step_once, tb_scalars, train_env


def charlm_params(steps: int, **more: Any) -> dict[str, Any]:
    return {"lr": 0.003, "steps": steps, "d_model": 32, "n_layer": 1, "n_head": 4,
            "block_size": 32, "batch_size": 8, "eval_every": 20, "seed": 1, **more}  # fmt: skip


def text_data(tmp_path: Path) -> Path:
    data = tmp_path / "text"
    data.mkdir(exist_ok=True)
    shutil.copy(TOPICS, data / "topics.py")
    return data


def launcher(params: dict[str, Any], data: Path, *extra: str, sweep: str = "s1") -> list[str]:
    return [
        sys.executable, "-m", "components.train", "--sweep-id", sweep,
        "--trial-id", trial_id(params), "--params", json.dumps(params), "--data", str(data),
        "--trainer-function", "examples.charlm.train:train", "--objective", "val_loss",
        "--checkpoint-interval", "0.3", "--keep-checkpoints", "2", *extra,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tdir_of(shared: Path, params: dict[str, Any], sweep: str = "s1") -> Path:
    return shared / "sweeps" / sweep / "trials" / trial_id(params)


def attempts(tdir: Path) -> list[dict[str, Any]]:
    lines = (tdir / "attempts.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] != "progress"]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def start_until(cmd: list[str], env: dict[str, str], needle: str) -> tuple[subprocess.Popen[str], list[str]]:  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return proc, seen
    raise AssertionError(f"ended before {needle!r}: rc={proc.wait()}\n{''.join(seen)[-3000:]}")


def assert_same_weights(a: Path, b: Path) -> None:
    ref, got = load_weights(a / "model"), load_weights(b / "model")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"differs in {key}"


# --------------------------------------------------------------------------- the launcher, pure


def test_torchrun_command_line_for_one_node_and_for_several() -> None:
    one = distributed.torchrun_argv(Topology(nproc_per_node=2), ["-m", "x"], python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   "--max-restarts", "0", "-m", "x"]  # fmt: skip
    topo = Topology(2, 3, 1, "10.0.0.1", 1234)
    many = distributed.torchrun_argv(topo, ["prog"], python="py", no_python=True)
    assert many == ["py", "-m", "torch.distributed.run", "--nnodes", "3", "--node-rank", "1",
                    "--master-addr", "10.0.0.1", "--master-port", "1234", "--nproc-per-node", "2",
                    "--max-restarts", "0", "--local-ranks-filter", "0", "--no-python", "prog"]  # fmt: skip
    assert list(topo.ranks()) == [2, 3] and topo.world_size == 6
    argv = ["--trial-id", "t", "--nproc-per-node", "2", "--nnodes=2", "--node-rank", "1",
            "--master-addr", "h", "--master-port=5", "--params", "{}"]  # fmt: skip
    assert distributed.strip_launcher_flags(argv) == ["--trial-id", "t", "--params", "{}"]


def test_launcher_flags_default_from_the_environment() -> None:
    from components.train import parse_args, topology

    args = parse_args(["--trial-id", "t", "--params", "{}", "--nnodes", "4"])
    env = {
        "JOB_COMPLETION_INDEX": "3",
        "SWEEPYARD_MASTER_ADDR": "head",
        "SWEEPYARD_MASTER_PORT": "7",
    }
    assert topology(args, env) == Topology(1, 4, 3, "head", 7)
    assert topology(args, {}) == Topology(1, 4, 0, "127.0.0.1", 29500)


def test_exit_codes_of_a_node() -> None:
    code = distributed.launcher_exit_code
    ended = AttemptEnd(started=True, exit_code=0)
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=ended, failures=[]) == 0
    killed = AttemptEnd(started=True, exit_code=None)  # rank 0 left no end record
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=killed, failures=[]) == 143
    gave_up = AttemptEnd(started=True, exit_code=3)
    assert code(node_rank=0, torchrun_rc=1, stopped=False, end=gave_up, failures=[]) == 3
    other = AttemptEnd()
    assert code(node_rank=1, torchrun_rc=0, stopped=False, end=other, failures=[]) == 0
    assert code(node_rank=1, torchrun_rc=1, stopped=True, end=other, failures=[]) == 143
    assert code(node_rank=1, torchrun_rc=1, stopped=False, end=other, failures=[1]) == 1
    assert code(node_rank=1, torchrun_rc=1, stopped=False, end=other, failures=[]) == 143


def test_torchrun_knows_the_flags_the_launcher_passes() -> None:
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    for flag in ("--local-ranks-filter", "--no-python", "--max-restarts", "--standalone",
                 "--node-rank", "--master-addr", "--master-port", "--nproc-per-node"):  # fmt: skip
        assert flag in out.stdout


# --------------------------------------------------------------------------- sharded checkpoints


def _save_steps(directory: Path, model: torch.nn.Module, steps: list[int]) -> list[dict[str, Any]]:
    from components.runtime.sharded_checkpoint import ShardedCheckpoints

    ckpts = ShardedCheckpoints(directory, dist=Dist(), attempt=1, keep=5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    saved = []
    for step in steps:
        model(torch.ones(1, 4)).sum().backward()
        opt.step()
        state = {"model": model, "opt": opt, "seen": {"step": step}}
        ckpts.save(step, {"trainer": state, "rng": None}, extra={"n": step}, block=True)
        saved.append({k: v.clone() for k, v in model.state_dict().items()})
    return saved


def test_a_torn_sharded_checkpoint_is_never_loaded_the_previous_one_is(tmp_path: Path) -> None:
    from components.runtime.sharded_checkpoint import ShardedCheckpoints

    directory = tmp_path / "checkpoints"
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    saved = _save_steps(directory, model, [1, 2, 3])
    assert (directory / "LATEST").read_text().strip() == "step-000000003"

    def loaded() -> tuple[int, dict[str, torch.Tensor]]:
        ckpts = ShardedCheckpoints(directory, dist=Dist(), attempt=2, keep=5)
        ckpt = ckpts.load()
        assert ckpt is not None
        fresh = torch.nn.Linear(4, 2)
        opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
        ckpts.restore(ckpt, {"model": fresh, "opt": opt})
        assert ckpt.state["trainer"]["seen"] == {"step": ckpt.step}  # this rank's own part
        assert ckpt.extra == {"n": ckpt.step}
        return ckpt.step, fresh.state_dict()

    # a temporary folder of a later save (every rank wrote, no commit) is never loaded
    torn = directory / ".tmp-4-1"
    shutil.copytree(directory / "step-000000003", torn)
    step, state = loaded()
    assert step == 3 and all(torch.equal(state[k], saved[2][k]) for k in state)
    assert not torn.exists()  # cleaned by rank 0 before anything is written
    # the newest final folder without its completion marker: the previous one
    (directory / "step-000000003" / "MANIFEST.json").unlink()
    step, state = loaded()
    assert step == 2 and all(torch.equal(state[k], saved[1][k]) for k in state)
    # a truncated shard: the one before
    shard = next((directory / "step-000000002").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-7])
    step, state = loaded()
    assert step == 1 and all(torch.equal(state[k], saved[0][k]) for k in state)


# --------------------------------------------------------------------------- end to end


def test_two_processes_train_charlm_and_rank_0_logs_each_step_once(tmp_path: Path) -> None:
    shared, data = tmp_path / "shared", text_data(tmp_path)
    params = charlm_params(steps=40)
    proc = run(launcher(params, data, "--nproc-per-node", "2"), train_env(shared, None))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = tdir_of(shared, params)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 40 and result["attempts"] == 1
    assert "rank 1 of 2" in proc.stderr and "rank 0 of 2" in proc.stderr
    assert [r["event"] for r in attempts(tdir)] == ["start", "end"]  # rank 0's records only
    # every metric step once, from rank 0 (TensorBoard read back with its own reader)
    tb = shared / "tensorboard" / "s1" / trial_id(params)
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    assert_each_step_once([s for s, _ in tb_scalars(tb, "train_loss")], list(range(1, 41)), "tb")
    assert [s for s, _ in tb_scalars(tb, "val_loss")] == [20, 40]
    # the final checkpoint: sharded, both ranks' own state, the completion marker
    last = tdir / "checkpoints" / (tdir / "checkpoints" / "LATEST").read_text().strip()
    names = {p.name for p in last.iterdir()}
    assert {"MANIFEST.json", ".metadata", "rank-00000.pt", "rank-00001.pt"} <= names
    assert json.loads((last / "MANIFEST.json").read_text())["world_size"] == 2
    assert load_weights(tdir / "model")  # rank 0 kept the (unwrapped) model


def test_two_nodes_of_two_processes_train_charlm(tmp_path: Path) -> None:
    shared, data = tmp_path / "shared", text_data(tmp_path)
    params = charlm_params(steps=20)
    env = train_env(shared, None)
    common = ["--nnodes", "2", "--nproc-per-node", "2"]
    # as a JobSet pod gets them: the node's index and the rendezvous in the environment
    rendezvous = {"SWEEPYARD_MASTER_ADDR": "127.0.0.1", "SWEEPYARD_MASTER_PORT": str(free_port())}
    nodes = [
        subprocess.Popen(launcher(params, data, *common), cwd=REPO,
                         env={**env, **rendezvous, "JOB_COMPLETION_INDEX": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)
    ]  # fmt: skip
    outs = [n.communicate(timeout=120)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "rank 3 of 4" in outs[1]
    tdir = tdir_of(shared, params)
    assert json.loads((tdir / "result.json").read_text())["status"] == "done"
    last = tdir / "checkpoints" / (tdir / "checkpoints" / "LATEST").read_text().strip()
    assert {f"rank-0000{r}.pt" for r in range(4)} <= {p.name for p in last.iterdir()}


@pytest.mark.slow
def test_a_killed_rank_is_a_preemption_and_the_resumed_trial_ends_bitwise_equal(
    tmp_path: Path,
) -> None:
    shared, data = tmp_path / "shared", text_data(tmp_path)
    params = charlm_params(steps=600, eval_every=200)  # seconds: signals land mid-run
    env = train_env(shared, None)
    two = ("--nproc-per-node", "2")
    ref = run(launcher(params, data, *two, sweep="reference"), env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    tdir = tdir_of(shared, params)
    proc, _ = start_until(launcher(params, data, *two), env, "charlm: training steps")
    deadline = time.monotonic() + 60  # past a checkpoint
    while not (tdir / "checkpoints" / "LATEST").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    (torchrun,) = children(proc.pid)
    workers = children(torchrun)
    assert len(workers) == 2
    ranks = {}
    for pid in workers:
        env_of = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        ranks[next(int(e[5:]) for e in env_of if e.startswith(b"RANK="))] = pid
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    end = attempts(tdir)[-1]
    assert end["event"] == "end" and end["outcome"] == "preempted", end
    assert not (tdir / "result.json").exists()
    again = run(launcher(params, data, *two), env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resuming from checkpoint step-\d+", again.stderr)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done"
    assert (result["attempts"], result["preemptions"], result["app_errors"]) == (2, 1, 0)
    assert_same_weights(tdir_of(shared, params, "reference"), tdir)
    tb = shared / "tensorboard" / "s1" / trial_id(params)
    assert_each_step_once([s for s, _ in tb_scalars(tb, "train_loss")], list(range(1, 601)), "tb")


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_the_same_step_saves_it_and_the_trial_resumes(
    tmp_path: Path,
) -> None:
    shared, data = tmp_path / "shared", text_data(tmp_path)
    params = charlm_params(steps=600, eval_every=200)  # seconds: signals land mid-run
    env = train_env(shared, None, SWEEPYARD_GRACE_SECONDS="20")
    two = ("--nproc-per-node", "2")
    ref = run(launcher(params, data, *two, sweep="reference"), env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    tdir = tdir_of(shared, params)
    proc, _ = start_until(launcher(params, data, *two), env, "sharded checkpoint step")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    stops = re.findall(r"preempted at step (\d+) \((saved|not saved)\)", out)
    assert len(stops) == 2 and stops[0] == stops[1], stops  # rank 0 and rank 1: the same step
    step, saved = int(stops[0][0]), stops[0][1] == "saved"
    latest = (tdir / "checkpoints" / "LATEST").read_text().strip()
    if saved:
        assert latest == f"step-{step:09d}"
    assert attempts(tdir)[-1]["outcome"] == "preempted"
    again = run(launcher(params, data, *two), env)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["preemptions"] == 1
    assert_same_weights(tdir_of(shared, params, "reference"), tdir)


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
        sys.exit(7)  # the program's own failure
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


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_resumes_on_four(tmp_path: Path) -> None:
    """DCP reshards: the model and optimizer saved by 2 ranks load onto 2 nodes x 2 ranks (each
    rank's own RNG and sampler state is for 2 ranks: skipped, said in the log)."""
    shared, data = tmp_path / "shared", text_data(tmp_path)
    params = charlm_params(steps=600, eval_every=200)  # seconds: signals land mid-run
    env = train_env(shared, None, SWEEPYARD_GRACE_SECONDS="20")
    tdir = tdir_of(shared, params)
    proc, _ = start_until(
        launcher(params, data, "--nproc-per-node", "2"), env, "sharded checkpoint step"
    )
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    saved = json.loads((tdir / "checkpoints" / (tdir / "checkpoints" / "LATEST").read_text().strip()
                        / "MANIFEST.json").read_text())  # fmt: skip
    assert saved["world_size"] == 2 and saved["step"] > 0
    rendezvous = {"SWEEPYARD_MASTER_ADDR": "127.0.0.1", "SWEEPYARD_MASTER_PORT": str(free_port())}
    nodes = [
        subprocess.Popen(launcher(params, data, "--nnodes", "2", "--nproc-per-node", "2"),
                         cwd=REPO, env={**env, **rendezvous, "JOB_COMPLETION_INDEX": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in (0, 1)
    ]  # fmt: skip
    outs = [n.communicate(timeout=180)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert f"training steps {saved['step'] + 1}..600" in outs[0], outs[0][-3000:]
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 600 and result["preemptions"] == 1

"""Distributed trials under torchrun (gloo on CPU): rank 0's tracking, sharded checkpoints, lost
ranks, SIGTERM. The launcher is in test_distributed_launcher.py, command trainers and rank failures
in test_distributed_command.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from components.contract import trial_id
from components.model_folder import load_weights
from components.runtime.distributed import Dist
from tests.support.distributed import (
    assert_same_weights,
    attempts,
    charlm_params,
    children,
    free_port,
    launcher,
    run,
    start_until,
    tdir_of,
    text_data,
)
from tests.support.train import REPO, assert_each_step_once, tb_scalars, train_env

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

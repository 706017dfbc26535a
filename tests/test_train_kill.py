"""Preemptions: a trial SIGKILLed and SIGTERMed at random moments ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from components.ids import trial_id
from tests.test_train import (
    assert_each_step_once,
    make_data,
    metric_steps,
    mlflow_trial_runs,
    run_train,
    start_train,
    tb_scalars,
    train_env,
    trial_params,
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _history(uri: str, run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, key)}


def run_interrupted(
    tmp_path: Path, uri: str, signals: Sequence[int], steps: int, seed: int
) -> None:
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    params = trial_params(steps=steps, eval_every=250)
    tid = trial_id(params)
    # The reference: the same trial, uninterrupted, in another sweep.
    ref = run_train(params, data, train_env(shared, uri), "--sweep-id", "reference")
    assert ref.returncode == 0, ref.stderr[-3000:]
    env = train_env(shared, uri, SWEEPYARD_GRACE_SECONDS="10")
    tdir = shared / "sweeps" / "s1" / "trials" / tid
    rng = random.Random(seed)
    for n, sig in enumerate(signals):
        proc = start_train(params, data, env)
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until this attempt's training loop runs
            if "training from step" in line:
                break
        else:
            raise AssertionError(f"attempt {n} ended before training: rc={proc.wait()}")
        proc.stdout.readline()
        if n == 0 or rng.random() < 0.5:
            # let it run into (or past) a checkpoint before the kill, sometimes
            __import__("time").sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143, out[-3000:]
        else:
            assert proc.returncode == -signal.SIGKILL
        assert not (tdir / "result.json").exists(), f"attempt {n} finished before the signal"
    final = run_train(params, data, env)
    assert final.returncode == 0, final.stderr[-3000:]
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done"
    assert result["attempts"] == len(signals) + 1 and result["preemptions"] == len(signals)

    # Bitwise-equal final weights.
    ref_w = _weights(shared / "sweeps" / "reference" / "trials" / tid / "model.pt")
    got_w = _weights(tdir / "model.pt")
    assert ref_w.keys() == got_w.keys()
    for key in ref_w:
        assert torch.equal(ref_w[key], got_w[key]), f"weights differ in {key}"

    # Exactly one MLflow run; every step exactly once, with the uninterrupted run's values.
    runs = mlflow_trial_runs(uri, "s1", tid)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert runs[0].data.tags["sweepyard.attempt"] == str(len(signals) + 1)
    assert runs[0].data.tags["sweepyard.preemptions"] == str(len(signals))
    assert_each_step_once(
        metric_steps(uri, run_id, "train_loss"), list(range(1, steps + 1)), "mlflow train_loss"
    )
    evals = sorted({*range(250, steps + 1, 250), steps})  # and the final step
    assert_each_step_once(metric_steps(uri, run_id, "val_loss"), evals, "mlflow val_loss")
    ref_run = mlflow_trial_runs(uri, "reference", tid)[0].info.run_id
    assert _history(uri, run_id, "train_loss") == _history(uri, ref_run, "train_loss")

    # TensorBoard: each step exactly once after purging, same values as the reference.
    got_tb = tb_scalars(shared / "tensorboard" / "s1" / tid, "train_loss")
    assert_each_step_once([s for s, _ in got_tb], list(range(1, steps + 1)), "tensorboard")
    ref_tb = tb_scalars(shared / "tensorboard" / "reference" / tid, "train_loss")
    assert dict(got_tb) == dict(ref_tb)


def test_one_sigkill_and_one_sigterm_change_nothing(tmp_path: Path, mlflow_server: Any) -> None:
    run_interrupted(
        tmp_path, mlflow_server.url, [signal.SIGKILL, signal.SIGTERM], steps=800, seed=1
    )


@pytest.mark.slow
def test_five_sigkills_and_five_sigterms_at_random_moments_change_nothing(
    tmp_path: Path, mlflow_server: Any
) -> None:
    signals = [signal.SIGKILL] * 5 + [signal.SIGTERM] * 5
    random.Random(3).shuffle(signals)
    run_interrupted(tmp_path, mlflow_server.url, signals, steps=4000, seed=3)


@pytest.mark.slow
def test_sigterm_with_a_grace_too_short_for_the_save_exits_143_and_resumes_from_the_previous(
    tmp_path: Path, mlflow_server: Any
) -> None:
    from components.runtime.checkpoint import CheckpointManager, read_checkpoint

    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    params = trial_params(steps=3000, eval_every=1000)
    tdir = shared / "sweeps" / "s1" / "trials" / trial_id(params)
    # 0.2 s of grace: any save (its estimate plus the 1 s margin) would not fit before SIGKILL.
    proc = start_train(params, data, train_env(shared, mlflow_server.url,
                                               SWEEPYARD_GRACE_SECONDS="0.2"))  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "training from step" in line:
            break
    latest = tdir / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 60
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert latest.exists(), "no checkpoint before the signal"
    time.sleep(0.1)  # some steps past it
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit after SIGTERM: {proc.communicate()[0][-3000:]}") from None
    assert proc.returncode == 143, out[-3000:]
    skipped = re.findall(r"not saving step (\d+): the write takes", out)
    assert skipped, f"the save was not skipped: {out[-3000:]}"
    assert not (tdir / "result.json").exists()

    # No torn checkpoint: no temporaries, every folder verifies, LATEST names the newest of them.
    ckpts = CheckpointManager(tdir / "checkpoints")
    names = [p.name for p in (tdir / "checkpoints").iterdir()]
    assert not [n for n in names if n.startswith((".tmp-", ".old-"))], names
    steps = [read_checkpoint(path).step for _, path in ckpts.list()]
    previous = ckpts.load()
    assert previous is not None and previous.step == max(steps) < int(skipped[0])

    resumed = run_train(params, data, train_env(shared, mlflow_server.url))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = resumed.stdout + resumed.stderr
    assert f"resuming from checkpoint step-{previous.step:09d} (step {previous.step})" in logs
    assert json.loads((tdir / "result.json").read_text())["status"] == "done"

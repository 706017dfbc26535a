"""Preemptions: a trial SIGKILLed and SIGTERMed at random moments ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from components.ids import trial_id
from components.model import load_weights
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
    return load_weights(path)


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
    ref_w = _weights(shared / "sweeps" / "reference" / "trials" / tid / "model")
    got_w = _weights(tdir / "model")
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

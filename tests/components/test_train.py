"""The supervisor with the reference trainer end to end (``python -m components.train``, real MLflow)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets
import torch

from components.contract import trial_id
from components.model_folder import load_torchscript, load_weights
from components.runtime.tracking import TAG_PARENT, TAG_ROLE, TAG_SWEEP
from tests.support.train import (
    REPO,
    assert_each_step_once,
    make_data,
    metric_steps,
    mlflow_trial_runs,
    run_train,
    tb_scalars,
    train_cmd,
    train_env,
    trial_params,
    trial_path,
)


def test_a_trial_trains_records_everything_and_is_skipped_once_done(
    tmp_path: Path, mlflow_server: Any
) -> None:
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    params = trial_params(steps=150, eval_every=50)
    env = train_env(shared, mlflow_server.url)
    proc = run_train(params, data, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = trial_path(shared, params)
    result = json.loads((tdir / "result.json").read_text())
    _assert_result_is_done(result, params)
    _assert_model_folder_predicts_without_the_trainer(tdir)
    _assert_one_child_run_with_params_tags_and_every_step(mlflow_server.url, params, result)
    _assert_tensorboard_has_every_step_and_the_hparams(shared, params)
    # Submitting the finished trial again: exit 0 at once, nothing retrained.
    attempts_before = (tdir / "attempts.jsonl").read_text()
    again = run_train(params, data, env)
    assert again.returncode == 0 and "already done" in again.stderr
    assert (tdir / "attempts.jsonl").read_text() == attempts_before


def _assert_result_is_done(result: dict[str, Any], params: dict[str, Any]) -> None:
    assert result["status"] == "done" and result["error"] is None and result["step"] == 150
    assert result["trial_id"] == trial_id(params) and result["params"] == params
    assert result["objective"]["metric"] == "val_loss"
    assert result["objective"]["value"] == result["metrics"]["val_loss"]
    assert result["metrics"]["val_accuracy"] > 0.8  # digits is easy: the model really learned
    assert (result["attempts"], result["preemptions"], result["app_errors"]) == (1, 0, 0)
    assert result["data_hash"] == "digits-hash" and result["image"] == "sweepyard:test"


def _assert_model_folder_predicts_without_the_trainer(tdir: Path) -> None:
    """The model folder: its weights, and TorchScript that predicts without the trainer's class."""
    assert load_weights(tdir / "model")["1.weight"].shape == (32, 64)
    model = load_torchscript(tdir / "model")
    x = torch.tensor(sklearn.datasets.load_digits().data[:100], dtype=torch.float32)
    y = torch.tensor(sklearn.datasets.load_digits().target[:100])
    assert (model(x).argmax(1) == y).float().mean() > 0.8


def _assert_one_child_run_with_params_tags_and_every_step(
    url: str, params: dict[str, Any], result: dict[str, Any]
) -> None:
    """One child run under the sweep's parent, params once, tags, every step once."""
    runs = mlflow_trial_runs(url, "s1", trial_id(params))
    assert [r.info.run_id for r in runs] == [result["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_ROLE] == "trial"
    assert run.data.tags["sweepyard.data_hash"] == "digits-hash"
    assert run.data.tags["sweepyard.image"] == "sweepyard:test"
    assert run.data.tags["sweepyard.git_commit"] == "abc123"
    assert run.data.tags["sweepyard.attempt"] == "1"
    assert run.data.params == {k: str(v) for k, v in params.items()}
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(url).get_run(run.data.tags[TAG_PARENT])
    assert parent.data.tags[TAG_ROLE] == "sweep" and parent.data.tags[TAG_SWEEP] == "s1"
    assert_each_step_once(
        metric_steps(url, run.info.run_id, "train_loss"),
        list(range(1, 151)),
        "mlflow",
    )
    assert metric_steps(url, run.info.run_id, "val_loss") == [50, 100, 150]


def _assert_tensorboard_has_every_step_and_the_hparams(
    shared: Path, params: dict[str, Any]
) -> None:
    """TensorBoard: every step once, and the HParams dashboard has the trial."""
    tb = shared / "tensorboard" / "s1" / trial_id(params)
    assert_each_step_once(
        [s for s, _ in tb_scalars(tb, "train_loss")], list(range(1, 151)), "tensorboard"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(0.003)
    assert start.session_start_info.hparams["trial_id"].string_value == trial_id(params)


def test_bad_input_gives_up_with_exit_3_and_says_what_is_wrong(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    env = train_env(shared, None)
    bad = trial_params(momentum=0.9)
    proc = run_train(bad, data, env)
    assert proc.returncode == 3
    result = json.loads((trial_path(shared, bad) / "result.json").read_text())
    assert result["status"] == "failed" and "momentum" in result["error"]
    # A trial id that does not belong to the params.
    cmd = train_cmd(trial_params(), data)
    cmd[cmd.index("--trial-id") + 1] = "0123456789ab"
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "does not match the params" in proc.stderr
    # A data folder without any table.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_train(trial_params(seed=5), empty, env)
    assert proc.returncode == 3
    assert (
        "no *.csv"
        in json.loads((trial_path(shared, trial_params(seed=5)) / "result.json").read_text())[
            "error"
        ]
    )


def test_application_errors_are_counted_and_the_budget_ends_in_exit_3(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    shared = tmp_path / "shared"
    env = train_env(shared, None)
    params = trial_params(seed=9)
    tdir = trial_path(shared, params)
    tdir.mkdir(parents=True)
    (tdir / "checkpoints").write_text("a file where the checkpoint folder belongs")
    first = run_train(params, data, env)
    assert first.returncode == 1, first.stderr[-2000:]
    assert not (tdir / "result.json").exists()
    second = run_train(params, data, env)
    assert second.returncode == 3
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "failed" and result["app_errors"] == 2 and result["attempts"] == 2
    assert "2 application errors" in result["error"]
    ends = [json.loads(line) for line in (tdir / "attempts.jsonl").read_text().splitlines()]
    assert [e.get("outcome") for e in ends if e["event"] == "end"] == ["app_error", "app_error"]


def wait_for_training(tdir: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until this attempt's start record is written and the training loop is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        lines = (
            (tdir / "attempts.jsonl").read_text().splitlines()
            if (tdir / "attempts.jsonl").exists()
            else []
        )
        if lines and json.loads(lines[-1]).get("pid") == proc.pid:
            return
        time.sleep(0.05)
    raise AssertionError("the trainer did not start in time")


def interrupt(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode in (143, 0), out[-3000:]
    return int(proc.returncode)

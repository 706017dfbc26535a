"""Preempt a trial at random moments and check it ends exactly as an uninterrupted run.

Shared by the kill tests of every trainer: the supervisor (``python -m components.train``) runs the
trial under SIGKILLs and SIGTERMs, then once more to the end; the end state (the trainer's final
model), the MLflow history and the TensorBoard scalars must equal an uninterrupted run's, each
(metric, step) exactly once.
"""

from __future__ import annotations

import json
import pydoc_data
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.contract import trial_id
from components.model_folder import load_weights
from tests.support.train import (
    REPO,
    assert_each_step_once,
    metric_steps,
    mlflow_trial_runs,
    tb_scalars,
    train_cmd,
    train_env,
)


@dataclass
class KillCase:
    """One trial to preempt.

    Attributes:
        params: the trial's params.
        data: the data folder.
        trainer: the supervisor's trainer arguments (``--trainer-function ...``).
        ready: a line of the output that says the training loop runs.
        steps: metric name → the steps it is logged at.
        end_state: the trial folder → its comparable end state (weights, bytes).
        max_sleep: the longest wait between ``ready`` and the signal, seconds.
        env: more environment for the supervisor.
    """

    params: dict[str, Any]
    data: Path
    trainer: list[str]
    ready: str
    steps: dict[str, list[int]]
    end_state: Callable[[Path], Any]
    max_sleep: float = 0.6
    env: dict[str, str] | None = None


def _history(uri: str, run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, key)}


def supervisor_argv(case: KillCase, sweep: str = "s1") -> list[str]:
    """The supervisor's command line for the case's trainer (instead of the reference trainer)."""
    argv = train_cmd(case.params, case.data, "--sweep-id", sweep)
    for flag in ("--trainer-function", "--trainer-command"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i : i + 2]
    return [*argv, *case.trainer]


def _run(case: KillCase, env: dict[str, str], sweep: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        supervisor_argv(case, sweep), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _interrupt_once(
    case: KillCase, env: dict[str, str], sig: int, n: int, rng: random.Random
) -> None:
    proc = subprocess.Popen(
        supervisor_argv(case), cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # wait until this attempt's training loop runs
        seen.append(line)
        if case.ready in line:
            break
    else:
        raise AssertionError(
            f"attempt {n} ended before training: rc={proc.wait()}\n{''.join(seen)[-3000:]}"
        )
    if n == 0 or rng.random() < 0.5:  # sometimes right away, sometimes into or past a checkpoint
        time.sleep(rng.uniform(0.0, case.max_sleep))
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, out[-3000:]
    else:
        assert proc.returncode == -signal.SIGKILL


def run_interrupted(
    tmp_path: Path, uri: str, case: KillCase, signals: Sequence[int], seed: int
) -> None:
    """The trial under ``signals`` (in order), then to the end; compared with a reference run."""
    shared = tmp_path / "shared"
    tid = trial_id(case.params)
    more = case.env or {}
    ref = _run(case, train_env(shared, uri, **more), "reference")
    assert ref.returncode == 0, ref.stderr[-3000:]
    env = train_env(shared, uri, SWEEPYARD_GRACE_SECONDS="10", **more)
    tdir = shared / "sweeps" / "s1" / "trials" / tid
    rng = random.Random(seed)
    for n, sig in enumerate(signals):
        _interrupt_once(case, env, sig, n, rng)
        assert not (tdir / "result.json").exists(), f"attempt {n} finished before the signal"
    final = _run(case, env, "s1")
    assert final.returncode == 0, final.stderr[-3000:]
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done"
    assert result["attempts"] == len(signals) + 1 and result["preemptions"] == len(signals)
    ref_dir = shared / "sweeps" / "reference" / "trials" / tid
    ref_result = json.loads((ref_dir / "result.json").read_text())
    assert result["metrics"] == ref_result["metrics"]

    # Bitwise-equal end state.
    assert_same_state(case.end_state(ref_dir), case.end_state(tdir))

    # Exactly one MLflow run; every step exactly once, with the uninterrupted run's values.
    runs = mlflow_trial_runs(uri, "s1", tid)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert runs[0].data.tags["sweepyard.attempt"] == str(len(signals) + 1)
    assert runs[0].data.tags["sweepyard.preemptions"] == str(len(signals))
    ref_run = mlflow_trial_runs(uri, "reference", tid)[0].info.run_id
    for key, expected in case.steps.items():
        assert_each_step_once(metric_steps(uri, run_id, key), expected, f"mlflow {key}")
        assert _history(uri, run_id, key) == _history(uri, ref_run, key), f"mlflow {key} values"

    # TensorBoard: each step exactly once after purging, same values as the reference.
    for key, expected in case.steps.items():
        got_tb = tb_scalars(shared / "tensorboard" / "s1" / tid, key)
        assert_each_step_once([s for s, _ in got_tb], expected, f"tensorboard {key}")
        ref_tb = tb_scalars(shared / "tensorboard" / "reference" / tid, key)
        assert dict(got_tb) == dict(ref_tb), f"tensorboard {key} values"


def assert_same_state(ref: Any, got: Any) -> None:
    """Equal, tensors bitwise (dicts of tensors key by key, with the key in the message)."""
    import torch

    if isinstance(ref, dict):
        assert ref.keys() == got.keys()
        for key in ref:
            if isinstance(ref[key], torch.Tensor):
                assert torch.equal(ref[key], got[key]), f"differs in {key}"
            else:
                assert ref[key] == got[key], f"differs in {key}"
    else:
        assert ref == got, "end states differ"


TOPICS = Path(pydoc_data.__file__).parent / "topics.py"


def charlm_case(tmp_path: Path, steps: int) -> KillCase:
    data = tmp_path / "text"
    data.mkdir()
    shutil.copy(TOPICS, data / "topics.py")
    params = {"lr": 0.003, "steps": steps, "d_model": 32, "n_layer": 2, "n_head": 4,
              "block_size": 32, "batch_size": 8, "eval_every": 50, "seed": 1}  # fmt: skip
    return KillCase(
        params=params,
        data=data,
        trainer=["--trainer-function", "examples.charlm.train:train"],
        ready="charlm: training steps",
        steps={
            "train_loss": list(range(1, steps + 1)),
            "val_loss": sorted({*range(50, steps + 1, 50), steps}),
        },
        end_state=lambda tdir: load_weights(tdir / "model"),
    )

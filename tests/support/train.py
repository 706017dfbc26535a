"""Running the supervisor with the reference trainer (``python -m components.train``) and reading
what a trial recorded; the train, kill, tracking and example tests share these. No tests here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import sklearn.datasets

from components.contract import trial_id
from components.runtime.tracking import TAG_SWEEP, TAG_TRIAL

REPO = Path(__file__).resolve().parents[2]
DIGITS = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def make_data(root: Path) -> Path:
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DIGITS, folder / "digits.csv.gz")
    return folder


def trial_params(**overrides: Any) -> dict[str, Any]:
    return {"lr": 0.003, "hidden": 32, "batch_size": 32, "steps": 200, "seed": 1, **overrides}


def train_cmd(params: dict[str, Any], data: Path, *extra: str, sweep: str = "s1") -> list[str]:
    return [
        sys.executable, "-m", "components.train",
        "--trainer-function", "components.trainers.digits:train",
        "--sweep-id", sweep, "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--data", str(data), "--data-hash", "digits-hash",
        "--objective", "val_loss", "--direction", "minimize",
        "--checkpoint-interval", "0.3", "--keep-checkpoints", "2", "--max-app-errors", "2",
        *extra,
    ]  # fmt: skip


def train_env(shared: Path, mlflow_uri: str | None, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPYARD_"))}
    env.pop("SENTRY_DSN", None)
    env.update(
        PYTHONPATH=str(REPO),
        SWEEPYARD_SHARED=str(shared),
        SWEEPYARD_IMAGE="sweepyard:test",
        SWEEPYARD_PIPELINE="sweep",
        SWEEPYARD_GIT_COMMIT="abc123",
        **more,
    )
    if mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_uri
    return env


def run_train(
    params: dict[str, Any], data: Path, env: dict[str, str], *extra: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_cmd(params, data, *extra),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trial_path(shared: Path, params: dict[str, Any], sweep: str = "s1") -> Path:
    return shared / "sweeps" / sweep / "trials" / trial_id(params)


def tb_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """Scalars as TensorBoard reads them (its own reader, purging orphaned steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def mlflow_trial_runs(uri: str, sweep: str, trial: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep")
    assert exp is not None
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_TRIAL}` = '{trial}'",
    )


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def assert_each_step_once(steps: list[int], expected: list[int], where: str) -> None:
    dup = [s for s, n in Counter(steps).items() if n > 1]
    assert not dup, f"{where}: steps logged more than once: {dup[:10]}"
    assert sorted(steps) == expected, (
        f"{where}: missing steps {sorted(set(expected) - set(steps))[:10]}"
    )


def start_train(
    params: dict[str, Any], data: Path, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        train_cmd(params, data, *extra), cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

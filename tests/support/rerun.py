"""The origin trial of the rerun tests: one local sweep of one trial of the reference trainer.

A CPU trial of 3000 steps (a few seconds) keeping a checkpoint before its last at a 1 s interval,
logged to a real MLflow server; ``Origin.rerun`` runs ``python -m pipelines rerun`` as a user does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets
import yaml

from pipelines.backends.local import cli as local_cli
from pipelines.build.argo import build
from pipelines.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "configs" / "local_small.yaml"
DIGITS = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
STEPS, EVAL_EVERY = 3000, 1000
PARAMS = {"hidden": 16, "batch_size": 32, "steps": STEPS, "seed": 0, "eval_every": EVAL_EVERY}


@dataclass
class Origin:
    root: Path
    config: Path
    source: Path  # the data source's file
    lock: Path  # the lock the origin recorded (a copy of requirements.lock)
    uri: str
    run_id: str
    trial_id: str

    @property
    def shared(self) -> Path:
        return self.root / ".sweepyard" / "shared" / "sweepyard-shared"

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPYARD_"))}
        env.pop("SENTRY_DSN", None)
        env.update(
            {
                "MLFLOW_TRACKING_URI": self.uri,
                "SWEEPYARD_GIT_COMMIT": "abc123",
                "SWEEPYARD_LOCK_FILE": str(self.lock),
                **more,
            }
        )
        return env

    def rerun(self, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``python -m pipelines rerun --run <origin>`` as a user runs it (the project: ``root``);
        ``flags`` starting with ``--trial`` find the run by its trial instead."""
        which = [] if "--trial" in flags else ["--run", self.run_id]
        cmd = [sys.executable, "-m", "pipelines", "rerun", *which]
        cmd += ["--pipeline", str(self.config), "--root", str(self.root), *flags]
        return subprocess.run(
            cmd, cwd=REPO, env=self.env(**env), capture_output=True, text=True, timeout=300
        )


@contextlib.contextmanager
def steps_env(mlflow_url: str, lock: Path) -> Iterator[None]:
    """This process's environment as the origin's steps had it, while the block runs."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith(("MLFLOW_", "SWEEPYARD_"))]:
            mp.delenv(name)
        mp.delenv("SENTRY_DSN", raising=False)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        mp.setenv("SWEEPYARD_GIT_COMMIT", "abc123")
        mp.setenv("SWEEPYARD_LOCK_FILE", str(lock))
        yield


def make_origin(root: Path, mlflow_url: str) -> Origin:
    """Run the origin sweep (``origin``) in the project ``root``, logging to ``mlflow_url``."""
    source = root / "source" / "digits.csv.gz"
    source.parent.mkdir()
    shutil.copy(DIGITS, source)
    lock = root / "requirements.lock"
    shutil.copy(REPO / "requirements.lock", lock)
    raw = yaml.safe_load(CONFIG.read_text())
    raw.update(name="rerun", parallelism=1)  # short: the Source column shows it whole
    raw["data"]["source"] = str(source.parent)
    raw["search"].update(max_trials=1, space={"grid": {"lr": [0.01]}, "fixed": PARAMS})
    raw["tracking"]["experiment"] = "rerun"
    raw["checkpoint"] = {"interval_seconds": 1, "keep": 3}
    config = root / "rerun.yaml"
    config.write_text(yaml.safe_dump(raw))
    with steps_env(mlflow_url, lock):
        manifest = build(load_config(config)).to_dict()
        code = local_cli.submit(
            manifest, sweep_id="origin", chaos=0.0, project_root=root, progress=False
        )
    assert code == 0
    (tdir,) = (root / ".sweepyard/shared/sweepyard-shared/sweeps/origin/trials").iterdir()
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done"
    return Origin(root, config, source, lock, mlflow_url, result["run_id"], tdir.name)

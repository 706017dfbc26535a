"""The example trainers under preemption: charlm (Python contract) and boost (command contract).

Each is SIGKILLed and SIGTERMed at random moments and must end exactly as an uninterrupted run:
bitwise-equal final model, each (metric, step) once in MLflow and TensorBoard.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.kill import KillCase, charlm_case, run_interrupted
from tests.support.train import make_data

BOOST = ["python", "-u", "examples/boost/boost.py", "--eta", "{eta}", "--rounds", "{rounds}",
         "--num-leaves", "{num_leaves}", "--seed", "{seed}", "--checkpoint-every", "5"]  # fmt: skip


def boost_case(tmp_path: Path, rounds: int) -> KillCase:
    import json

    params = {"eta": 0.1, "rounds": rounds, "num_leaves": 7, "seed": 0}
    every = list(range(1, rounds + 1))
    return KillCase(
        params=params,
        data=make_data(tmp_path),
        trainer=["--trainer-command", json.dumps(BOOST)],
        ready="boost.py: training rounds",
        steps={"train_loss": every, "val_loss": every, "val_accuracy": every},
        end_state=lambda tdir: (tdir / "model" / "model.txt").read_bytes(),
    )


@pytest.mark.slow
def test_charlm_survives_a_sigkill_and_a_sigterm(tmp_path: Path, mlflow_server: Any) -> None:
    case = charlm_case(tmp_path, steps=300)
    run_interrupted(tmp_path, mlflow_server.url, case, [signal.SIGTERM, signal.SIGKILL], seed=1)


@pytest.mark.slow
def test_boost_survives_a_sigkill_and_a_sigterm(tmp_path: Path, mlflow_server: Any) -> None:
    case = boost_case(tmp_path, rounds=150)
    run_interrupted(tmp_path, mlflow_server.url, case, [signal.SIGKILL, signal.SIGTERM], seed=1)


def _ten_signals(seed: int) -> list[int]:
    signals = [signal.SIGKILL] * 5 + [signal.SIGTERM] * 5
    random.Random(seed).shuffle(signals)
    return signals


@pytest.mark.slow
def test_charlm_five_sigkills_and_five_sigterms_change_nothing(
    tmp_path: Path, mlflow_server: Any
) -> None:
    case = charlm_case(tmp_path, steps=1500)
    run_interrupted(tmp_path, mlflow_server.url, case, _ten_signals(3), seed=3)


@pytest.mark.slow
def test_boost_five_sigkills_and_five_sigterms_change_nothing(
    tmp_path: Path, mlflow_server: Any
) -> None:
    case = boost_case(tmp_path, rounds=600)
    run_interrupted(tmp_path, mlflow_server.url, case, _ten_signals(4), seed=4)

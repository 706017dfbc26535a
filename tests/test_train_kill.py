"""Preemptions: a trial SIGKILLed and SIGTERMed at random moments ends exactly as an uninterrupted one.

The reference trainer here; the example trainers in tests/test_examples_kill.py, both through
:func:`tests.kill_helpers.run_interrupted`.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import pytest

from components.model import load_weights
from tests.kill_helpers import KillCase, run_interrupted
from tests.test_train import make_data, trial_params


def digits_case(tmp_path: Path, steps: int) -> KillCase:
    return KillCase(
        params=trial_params(steps=steps, eval_every=250),
        data=make_data(tmp_path),
        trainer=["--trainer-function", "components.trainers.digits:train"],
        ready="training from step",
        steps={
            "train_loss": list(range(1, steps + 1)),
            "val_loss": sorted({*range(250, steps + 1, 250), steps}),  # and the final step
        },
        end_state=lambda tdir: load_weights(tdir / "model"),
    )


def test_one_sigkill_and_one_sigterm_change_nothing(tmp_path: Path, mlflow_server: Any) -> None:
    case = digits_case(tmp_path, steps=800)
    run_interrupted(tmp_path, mlflow_server.url, case, [signal.SIGKILL, signal.SIGTERM], seed=1)


@pytest.mark.slow
def test_five_sigkills_and_five_sigterms_at_random_moments_change_nothing(
    tmp_path: Path, mlflow_server: Any
) -> None:
    signals = [signal.SIGKILL] * 5 + [signal.SIGTERM] * 5
    random.Random(3).shuffle(signals)
    run_interrupted(tmp_path, mlflow_server.url, digits_case(tmp_path, steps=4000), signals, seed=3)

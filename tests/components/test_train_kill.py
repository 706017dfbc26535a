"""Preemptions: a trial SIGKILLed and SIGTERMed at random moments ends exactly as an uninterrupted one.

The reference trainer here; the example trainers in tests/test_examples_kill.py, both through
:func:`tests.support.kill.run_interrupted`.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from components.contract import trial_id
from components.model_folder import load_weights
from tests.support.kill import KillCase, run_interrupted
from tests.support.train import make_data, run_train, start_train, train_env, trial_params


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

"""The example trainers: boost.py by itself under the command contract, charlm through the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from components.contract import trial_id
from components.model_folder import load_torchscript, load_weights
from examples.charlm.model import CharTransformer
from tests.support.kill import charlm_case
from tests.support.train import REPO, make_data, train_env

BOOST = REPO / "examples" / "boost" / "boost.py"


def _boost_env(root: Path, data: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "SWEEPYARD_DATA": str(data),
        "SWEEPYARD_CHECKPOINT_DIR": str(root / "ckpt"),
        "SWEEPYARD_METRICS": str(root / "metrics.jsonl"),
        "SWEEPYARD_MODEL_DIR": str(root / "model"),
    }


def _lines(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_boost_resumes_from_its_booster_to_the_same_model_byte_for_byte(tmp_path: Path) -> None:
    """SIGTERM (saved) and SIGKILL (not saved) mid-training: the same model.txt and metrics."""
    data = make_data(tmp_path)
    argv = [sys.executable, "-u", str(BOOST), "--eta", "0.3", "--rounds", "120"]
    ref_env, env = _boost_env(tmp_path / "ref", data), _boost_env(tmp_path / "int", data)
    subprocess.run(argv, env=ref_env, check=True, capture_output=True, timeout=120)
    metrics = tmp_path / "int" / "metrics.jsonl"
    # Late kills too: one-leaf trees appear past ~100 rounds at this learning rate.
    for lines, sig, code in ((20, signal.SIGTERM, 143), (90, signal.SIGKILL, -9), (105, signal.SIGTERM, 143)):  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
        while len(_lines(metrics)) < lines:
            assert proc.poll() is None, "boost.py ended before the signal"
            time.sleep(0.01)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ref_model = (tmp_path / "ref" / "model" / "model.txt").read_bytes()
    assert (tmp_path / "int" / "model" / "model.txt").read_bytes() == ref_model
    reference = {m["step"]: m for m in _lines(tmp_path / "ref" / "metrics.jsonl")}
    assert sorted(reference) == list(range(1, 121))
    for m in _lines(metrics):  # rounds written again after a resume carry the same values
        assert m == reference[m["step"]]
    assert reference[120]["val_accuracy"] > 0.9


def test_boost_without_the_contract_environment_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPYARD_")}
    proc = subprocess.run(
        [sys.executable, str(BOOST), "--eta", "0.1", "--rounds", "5"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and "$SWEEPYARD_DATA is not set" in proc.stderr


def _supervise(
    case_params: dict[str, object], data: Path, shared: Path
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "components.train", "--sweep-id", "s1",
        "--trial-id", trial_id(case_params), "--params", json.dumps(case_params),
        "--data", str(data), "--trainer-function", "examples.charlm.train:train",
        "--objective", "val_loss", "--direction", "minimize",
    ]  # fmt: skip
    return subprocess.run(
        argv, cwd=REPO, env=train_env(shared, None), capture_output=True, text=True, timeout=300
    )


def test_charlm_learns_and_its_model_loads_without_its_class(tmp_path: Path) -> None:
    case = charlm_case(tmp_path, steps=60)
    params = {**case.params, "lr": 0.01, "eval_every": 30}
    proc = _supervise(params, case.data, tmp_path / "shared")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = tmp_path / "shared" / "sweeps" / "s1" / "trials" / trial_id(params)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done"
    val_loss = result["objective"]["value"]
    assert val_loss < 4.0  # below a uniform guess over 256 bytes (ln 256 = 5.5 nats)
    # The registered model: TorchScript (no class needed) and weights, the same function.
    scripted = load_torchscript(tdir / "model")
    model = CharTransformer(
        params["block_size"], params["d_model"], params["n_layer"], params["n_head"]
    )  # type: ignore[arg-type]
    model.load_state_dict(load_weights(tdir / "model"))
    model.eval()
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
    assert len(model.generate(b"def ", 20)) == 20


def test_charlm_gives_up_on_params_that_cannot_build_a_model(tmp_path: Path) -> None:
    case = charlm_case(tmp_path, steps=10)
    params = {**case.params, "n_head": 3}  # does not divide d_model=32
    proc = _supervise(params, case.data, tmp_path / "shared")
    assert proc.returncode == 3
    assert "'n_head' (3) must divide 'd_model' (32)" in proc.stderr

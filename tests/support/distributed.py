"""Running trials under torchrun (gloo on CPU) and reading what their ranks left; the distributed
tests share these. No tests here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from components.contract import trial_id
from components.model_folder import load_weights
from tests.support.kill import TOPICS
from tests.support.train import REPO


def charlm_params(steps: int, **more: Any) -> dict[str, Any]:
    return {"lr": 0.003, "steps": steps, "d_model": 32, "n_layer": 1, "n_head": 4,
            "block_size": 32, "batch_size": 8, "eval_every": 20, "seed": 1, **more}  # fmt: skip


def text_data(tmp_path: Path) -> Path:
    data = tmp_path / "text"
    data.mkdir(exist_ok=True)
    shutil.copy(TOPICS, data / "topics.py")
    return data


def launcher(params: dict[str, Any], data: Path, *extra: str, sweep: str = "s1") -> list[str]:
    return [
        sys.executable, "-m", "components.train", "--sweep-id", sweep,
        "--trial-id", trial_id(params), "--params", json.dumps(params), "--data", str(data),
        "--trainer-function", "examples.charlm.train:train", "--objective", "val_loss",
        "--checkpoint-interval", "0.3", "--keep-checkpoints", "2", *extra,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tdir_of(shared: Path, params: dict[str, Any], sweep: str = "s1") -> Path:
    return shared / "sweeps" / sweep / "trials" / trial_id(params)


def attempts(tdir: Path) -> list[dict[str, Any]]:
    lines = (tdir / "attempts.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] != "progress"]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def start_until(cmd: list[str], env: dict[str, str], needle: str) -> tuple[subprocess.Popen[str], list[str]]:  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return proc, seen
    raise AssertionError(f"ended before {needle!r}: rc={proc.wait()}\n{''.join(seen)[-3000:]}")


def assert_same_weights(a: Path, b: Path) -> None:
    ref, got = load_weights(a / "model"), load_weights(b / "model")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"differs in {key}"

"""Checkpoints: round trip, retention, verification, fallback, and a real kill mid-write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from components.runtime.checkpoint import (
    LATEST,
    MANIFEST,
    CheckpointError,
    CheckpointManager,
    read_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(5, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 5, generator=g)).sum().backward()
    opt.step()
    random.seed(seed)
    np.random.seed(seed)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        },
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "sampler": {"epoch": 2, "position": 64},
        "nested": [(1, "a", None), {"x": [1.5, 2]}],
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _assert_same(a: object, b: object, path: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(_bits(a), _bits(b)), path
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_round_trip_restores_every_part_of_the_state_bitwise(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck")
    state = _state(1)
    mgr.save(10, state, extra={"pending": [["loss", 0.5, 1, 3]]}, metric=0.25, block=True)
    ckpt = CheckpointManager(tmp_path / "ck").load()
    assert ckpt is not None and ckpt.step == 10 and ckpt.metric == 0.25
    assert ckpt.extra == {"pending": [["loss", 0.5, 1, 3]]}
    _assert_same(state, ckpt.state)
    # The restored optimizer state loads into a fresh optimizer and continues identically.
    model = torch.nn.Linear(5, 3)
    model.load_state_dict(ckpt.state["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    opt.load_state_dict(ckpt.state["optimizer"])
    random.setstate(ckpt.state["rng"]["python"])
    np.random.set_state(ckpt.state["rng"]["numpy"])
    assert (tmp_path / "ck" / LATEST).read_text().strip() == "step-000000010"


def test_save_copies_the_state_so_training_can_go_on_while_it_is_written(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck")
    weights = torch.arange(1_000_000, dtype=torch.float32)
    mgr.save(1, {"w": weights})
    weights.add_(1)  # the training loop changes the weights right after save() returns
    mgr.wait()
    loaded = mgr.load()
    assert loaded is not None
    assert torch.equal(loaded.state["w"], torch.arange(1_000_000, dtype=torch.float32))
    assert mgr.last_stall_seconds is not None and mgr.last_write_seconds is not None


def test_keeps_the_last_n_and_the_best(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck", keep=2, direction="minimize")
    for step, metric in [(1, 0.9), (2, 0.1), (3, 0.5), (4, 0.6), (5, 0.7)]:
        mgr.save(step, {"w": torch.full((3,), float(step))}, metric=metric, block=True)
    assert [s for s, _ in mgr.list()] == [5, 4, 2]
    mgr_max = CheckpointManager(tmp_path / "ck2", keep=1, direction="maximize")
    for step, metric in [(1, 0.9), (2, 0.1), (3, 0.5)]:
        mgr_max.save(step, {"w": torch.zeros(1)}, metric=metric, block=True)
    assert [s for s, _ in mgr_max.list()] == [3, 1]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck", keep=3)
    for step in (1, 2, 3):
        mgr.save(step, {"w": torch.full((1000,), float(step))}, block=True)
    blob = tmp_path / "ck" / "step-000000003" / "tensors.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_checkpoint(blob.parent)
    ckpt = CheckpointManager(tmp_path / "ck").load()
    assert ckpt is not None and ckpt.step == 2
    assert torch.equal(ckpt.state["w"], torch.full((1000,), 2.0))
    # A truncated file and a missing manifest are skipped too.
    (tmp_path / "ck" / "step-000000002" / "tensors.bin").write_bytes(b"short")
    (tmp_path / "ck" / "step-000000001" / "state.json").unlink()
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        CheckpointManager(tmp_path / "ck").load()


def test_an_unfinished_write_is_never_loaded_and_gets_cleaned(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck")
    mgr.save(1, {"w": torch.ones(10)}, block=True)
    # What a kill mid-write leaves behind: a temporary folder, and (renamed but) no manifest.
    (tmp_path / "ck" / ".tmp-step-000000002-999").mkdir()
    (tmp_path / "ck" / ".tmp-step-000000002-999" / "tensors.bin").write_bytes(b"x" * 40)
    (tmp_path / "ck" / "step-000000002").mkdir()
    ckpt = CheckpointManager(tmp_path / "ck").load()
    assert ckpt is not None and ckpt.step == 1
    assert not (tmp_path / "ck" / ".tmp-step-000000002-999").exists()


def test_unstorable_state_is_a_clear_error(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ck")
    with pytest.raises(TypeError, match=r"state\['bad'\].*object"):
        mgr.save(1, {"bad": object()})
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path / "x", keep=0)


WRITER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from components.runtime.checkpoint import CheckpointManager
    mgr = CheckpointManager(Path(sys.argv[1]), keep=2)
    step = mgr.load().step if mgr.load() else 0
    big = torch.empty(24_000_000)
    while True:
        step += 1
        big.fill_(float(step))
        mgr.save(step, {"w": big, "step": torch.tensor(step)})
        print(step, flush=True)
    """
)


def test_killed_mid_write_the_previous_checkpoint_loads(tmp_path: Path) -> None:
    """SIGKILL a process that writes ~100 MB checkpoints back to back, at random moments."""
    directory = tmp_path / "ck"
    rng = random.Random(7)
    caught_mid_write = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # the first save has started
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
        caught_mid_write += bool(leftovers)
        ckpt = CheckpointManager(directory).load()
        if ckpt is None:
            continue
        value = float(ckpt.state["step"])
        assert torch.equal(ckpt.state["w"], torch.full((24_000_000,), value))
        assert (ckpt.path / MANIFEST).exists()
    assert caught_mid_write >= 1, "no kill landed mid-write: the test proved nothing"

"""The harness's exit: what a trial waits for once its loop is over."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

from components.runtime.harness import Harness


class _Client:
    """Stands in for MlflowClient: records each batch; a run's history is empty."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.sending = threading.Event()

    def log_batch(self, run_id: str, metrics: list[Any], synchronous: bool = True) -> None:
        self.sending.set()
        self.batches.append([m.step for m in metrics])

    def get_run(self, run_id: str) -> Any:
        class _Data:
            metrics: dict[str, float] = {}

        class _Run:
            data = _Data()

        return _Run()

    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        return []


def test_the_last_points_go_to_mlflow_while_the_last_checkpoint_is_written(
    tmp_path: Path, monkeypatch: Any
) -> None:
    client = _Client()
    harness = Harness(
        tmp_path / "trial",
        tb_dir=None,
        connect=lambda: (client, "run-1"),
        sender_interval=3600.0,  # nothing would go out before the flush at exit
        checkpoint_interval=3600.0,
    )
    assert harness.sender is not None
    deadline = time.monotonic() + 10
    while not harness.sender.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert harness.sender.connected
    model = torch.nn.Linear(4, 2)
    for step in range(1, 51):
        harness.log(step, {"train_loss": float(step)})
    harness.save(50, {"model": model.state_dict()})

    overlapped: list[bool] = []
    writes = harness.checkpoints.wait

    def slow_write() -> None:  # the last checkpoint's write takes as long as it must
        overlapped.append(client.sending.wait(timeout=10))
        writes()

    monkeypatch.setattr(harness.checkpoints, "wait", slow_write)
    assert harness.close(timeout=10) == 0
    assert overlapped[0], "MLflow got nothing until the checkpoint was durable"
    assert sorted(s for batch in client.batches for s in batch) == list(range(1, 51))
    assert harness.checkpoints.latest_pointer() is not None

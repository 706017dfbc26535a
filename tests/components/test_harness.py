"""The harness's exit: what a trial waits for once its loop is over."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from components.runtime.harness import Harness


class _Client:
    """Stands in for MlflowClient: records each batch; the run holds no points yet."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.sending = threading.Event()

    def log_batch(self, run_id: str, metrics: list[Any], synchronous: bool = True) -> None:
        self.sending.set()
        self.batches.append([m.step for m in metrics])

    def get_run(self, run_id: str) -> Any:  # what the sender's watermark reads
        empty = SimpleNamespace(metrics=[])
        return SimpleNamespace(data=SimpleNamespace(to_proto=lambda: empty, metrics={}))


def test_the_last_points_go_to_mlflow_while_the_last_checkpoint_is_written(
    tmp_path: Path, monkeypatch: Any
) -> None:
    client = _Client()
    reachable = threading.Event()

    def connect() -> tuple[Any, str]:  # the server answers once the test says so
        assert reachable.wait(timeout=10)
        return client, "run-1"

    harness = Harness(
        tmp_path / "trial",
        tb_dir=None,
        connect=connect,
        sender_interval=3600.0,  # after its first batch, nothing would go out before the exit
        checkpoint_interval=3600.0,
    )
    harness.log(1, {"train_loss": 1.0})
    harness.logger.drain()  # step 1 waits in the sender's queue
    reachable.set()
    assert client.sending.wait(timeout=10), "the sender never sent its first batch"
    client.sending.clear()  # from here on the sender sleeps out its interval
    model = torch.nn.Linear(4, 2)
    for step in range(2, 51):
        harness.log(step, {"train_loss": float(step)})
    harness.save(50, {"model": model.state_dict()})

    overlapped: list[bool] = []
    writes = harness.checkpoints.wait

    def slow_write() -> None:  # the last checkpoint's write takes as long as it must
        overlapped.append(client.sending.wait(timeout=5))
        writes()

    monkeypatch.setattr(harness.checkpoints, "wait", slow_write)
    assert harness.close(timeout=10) == 0
    assert overlapped[0], "MLflow got nothing until the checkpoint was durable"
    assert client.batches[0] == [1]
    assert sorted(s for batch in client.batches for s in batch) == list(range(1, 51))
    assert harness.checkpoints.latest_pointer() is not None

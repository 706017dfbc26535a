"""The trial's TensorBoard event files, read back by TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from components.runtime.tbevents import EventFile, masked_crc32c


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_masked_crc_matches_tensorboards_own() -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    for data in (b"", b"\x00" * 8, b"brain.Event:2", bytes(range(256))):
        assert int.from_bytes(masked_crc32c(data), "little") == reference(data)


def test_tensorboard_reads_every_step_and_tag(tmp_path: Path) -> None:
    f = EventFile(tmp_path, purge_step=1)
    for step in range(1, 51):
        f.scalars(step, {"train_loss": 1 / step, "lr": 0.1}, walltime=1000.0 + step)
    f.close()
    loss = scalars(tmp_path, "train_loss")
    assert [s for s, _ in loss] == list(range(1, 51))
    assert loss[9][1] == pytest.approx(0.1) and len(scalars(tmp_path, "lr")) == 50


def test_a_resumed_attempt_purges_what_the_killed_one_wrote_after_its_checkpoint(
    tmp_path: Path,
) -> None:
    killed = EventFile(tmp_path, purge_step=1)
    for step in range(1, 31):  # checkpointed at step 20, killed after step 30
        killed.scalars(step, {"train_loss": 1.0}, walltime=1000.0 + step)
    killed.flush()  # the process dies here: no close
    resumed = EventFile(tmp_path, purge_step=21)
    for step in range(21, 41):
        resumed.scalars(step, {"train_loss": 2.0}, walltime=2000.0 + step)
    resumed.close()
    points = scalars(tmp_path, "train_loss")
    assert [s for s, _ in points] == list(range(1, 41))
    assert {v for s, v in points if s > 20} == {2.0}

"""A TensorBoard event file written by the thread that logs: the records TensorBoard reads, no more.

torch's ``SummaryWriter`` hands every scalar to a writer thread of its own, which frames it with a
pure-Python CRC32C (~100 µs a scalar on a 2-core machine): a second thread per trial competing with
the training loop for the GIL and the cores. :class:`EventFile` writes the same TFRecord framing
(length, masked CRC32C of the length, the serialized ``Event``, masked CRC32C of it) with the C
CRC32C the storage client already brings, from the caller's thread, buffered.

The file name and the first events match what ``SummaryWriter(log_dir, purge_step=N)`` writes, so
TensorBoard drops the steps at or after ``N`` that an earlier attempt left in the same folder.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary

_MASK_DELTA = 0xA282EAD8
_files = itertools.count()


def masked_crc32c(data: bytes) -> bytes:
    """TFRecord's masked CRC32C of ``data``, packed little-endian."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


class EventFile:
    """One ``events.out.tfevents.*`` file in ``log_dir`` (thread-safe; flushed every ``flush_secs``
    of writes, on :meth:`flush` and on :meth:`close`)."""

    def __init__(self, log_dir: Path, *, purge_step: int | None, flush_secs: float = 30.0) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_files)}"
        )
        self.path = log_dir / name
        self.flush_secs = flush_secs
        self._lock = threading.Lock()
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._flushed = time.monotonic()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(
                Event(
                    wall_time=time.time(),
                    step=purge_step,
                    session_log=SessionLog(status=SessionLog.START),
                )
            )
        self.flush()

    def scalars(self, step: int, values: Mapping[str, float], walltime: float) -> None:
        """One event holding every value of this step."""
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._write(Event(wall_time=walltime, step=step, summary=summary))

    def summary(self, summary: Summary, step: int) -> None:
        """A summary built elsewhere (e.g. the HParams plugin's)."""
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _write(self, event: Event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        record = header + masked_crc32c(header) + data + masked_crc32c(data)
        with self._lock:
            self._file.write(record)
            due = time.monotonic() - self._flushed >= self.flush_secs
        if due:
            self.flush()

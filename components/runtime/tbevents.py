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
from typing import Any

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

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


# The HParams plugin's names (tensorboard.plugins.hparams.metadata, whose import pulls in numpy
# and TensorBoard's tensor utilities; torch.utils.tensorboard's ``hparams`` costs a trial ~0.2 s).
HPARAMS_PLUGIN = "hparams"
HPARAMS_VERSION = 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"


def hparams_summaries(
    hparams: Mapping[str, Any], metrics: Mapping[str, float]
) -> tuple[Summary, Summary, Summary]:
    """The HParams plugin's experiment, session start and session end summaries: what
    ``torch.utils.tensorboard.summary.hparams`` builds for int, float, bool and str values
    (anything else is written as its ``str``; None is left out)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for key, value in hparams.items():
        if value is None:
            continue
        if isinstance(value, int | float):  # (a bool is a number, as torch writes it)
            start.hparams[key].number_value = value
            kind = api_pb2.DATA_TYPE_FLOAT64
        else:
            start.hparams[key].string_value = str(value)
            kind = api_pb2.DATA_TYPE_STRING
        infos.append(api_pb2.HParamInfo(name=key, type=kind))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in metrics],
    )
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)

    def summary(tag: str, **content: Any) -> Summary:
        data = plugin_data_pb2.HParamsPluginData(version=HPARAMS_VERSION, **content)
        meta = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString()
            )
        )
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])

    return (
        summary(EXPERIMENT_TAG, experiment=experiment),
        summary(SESSION_START_INFO_TAG, session_start_info=start),
        summary(SESSION_END_INFO_TAG, session_end_info=end),
    )

"""Following the files a program writes as it writes them: a text file, TensorBoard event files.

The readings' grammar is :mod:`components.collect`'s; this module only tails.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.collect import Reading

log = logging.getLogger(__name__)

_MAX_READ = 64 << 20  # bytes a TextTail reads in one poll


class TextTail:
    """Follows a text file that a program appends to, one complete line at a time.

    The file may not exist yet, and may be recreated or truncated between attempts: when its size
    drops below what was read, reading starts again at 0. ``offset`` is the byte after the last
    complete line returned (give it to a later TextTail to resume there).
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self._pending = b""

    def poll(self, *, final: bool = False) -> list[str]:
        """The complete lines appended since the last poll, decoded, without the newline.

        A partial last line waits for a later poll, unless ``final`` (the program has ended).
        """
        try:
            with open(self.path, "rb") as f:
                position = self.offset + len(self._pending)
                if os.fstat(f.fileno()).st_size < position:  # recreated or truncated
                    self.offset, self._pending, position = 0, b"", 0
                f.seek(position)
                data = self._pending + f.read(_MAX_READ)
        except FileNotFoundError:
            data = self._pending
        end = len(data) if final else data.rfind(b"\n") + 1
        complete, self._pending = data[:end], data[end:]
        self.offset += len(complete)
        lines = complete.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        return [line.removesuffix(b"\r").decode("utf-8", errors="replace") for line in lines]


def _tensor_scalar(tensor: Any) -> float | None:
    """The value of a 0-d float32/float64 TensorProto, else None."""
    from tensorboard.compat.proto import types_pb2

    if len(tensor.tensor_shape.dim) != 0:
        return None
    if tensor.dtype == types_pb2.DT_FLOAT:
        values, fmt = tensor.float_val, "<f"
    elif tensor.dtype == types_pb2.DT_DOUBLE:
        values, fmt = tensor.double_val, "<d"
    else:
        return None
    if len(values) == 1:
        return float(values[0])
    if len(tensor.tensor_content) == struct.calcsize(fmt):
        return float(struct.unpack(fmt, tensor.tensor_content)[0])
    return None


class TensorBoardTail:
    """Follows every TensorBoard event file under ``folder`` (recursively) as it is written.

    Records are read by TensorBoard's own loader, which keeps a record cut off at the end of a file
    being written and returns it whole on a later poll. Scalars are ``simple_value`` (torch,
    tensorboardX, TF1) or 0-d float tensors of the ``scalars`` plugin (TF2); the plugin is named
    only in a tag's first value in a run, so it is remembered per (folder, tag).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._loaders: dict[Path, Any] = {}
        self._sizes: dict[Path, int] = {}
        self._plugins: dict[tuple[Path, str], str] = {}

    def poll(self) -> list[Reading]:
        readings: list[Reading] = []
        for path in self._event_files():
            readings += self._read(path)
        return readings

    def _event_files(self) -> list[Path]:
        walk = os.walk(self.folder)
        found = [Path(top, name) for top, _, names in walk for name in names if "tfevents" in name]
        return sorted(found, key=lambda p: (p.name, str(p)))

    def _read(self, path: Path) -> list[Reading]:
        from google.protobuf.message import DecodeError
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.compat import tf

        try:
            size = path.stat().st_size
            if size < self._sizes.get(path, 0):  # recreated: read it again from its start
                self._loaders.pop(path, None)
            self._sizes[path] = size
            if path not in self._loaders:
                self._loaders[path] = event_file_loader.LegacyEventFileLoader(str(path))
        except (OSError, tf.errors.OpError) as e:
            log.debug("cannot read %s yet: %s", path, e)
            return []
        readings: list[Reading] = []
        while True:
            try:
                for event in self._loaders[path].Load():
                    readings.extend(self._scalars(path.parent, event))
                return readings
            except DecodeError:  # a whole record that is not an Event: skipped, go on after it
                log.warning("%s: a record that is not an Event proto, skipped", path)
            except (OSError, tf.errors.OpError) as e:  # the loader keeps its place; retry later
                log.debug("reading %s: %s", path, e)
                return readings

    def _scalars(self, run: Path, event: Any) -> Iterator[Reading]:
        if event.WhichOneof("what") != "summary":
            return
        for value in event.summary.value:
            plugin = value.metadata.plugin_data.plugin_name
            if plugin:
                self._plugins[(run, value.tag)] = plugin
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                yield Reading(value.tag, float(value.simple_value), int(event.step))
            elif kind == "tensor" and self._plugins.get((run, value.tag)) == "scalars":
                number = _tensor_scalar(value.tensor)
                if number is not None:
                    yield Reading(value.tag, number, int(event.step))

"""The on-disk format of a checkpoint, with no pickle: structure as JSON, tensors as raw bytes.

See :mod:`components.runtime.checkpoint` for the folder layout and the save/load protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.runtime.ckpt_folder import MANIFEST, CheckpointError

FORMAT_VERSION = 1


# --------------------------------------------------------------------------- structure encoding


def encode(obj: Any, tensors: list[torch.Tensor], path: str) -> Any:
    """JSON-able structure of ``obj`` with every tensor moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return {"__tensor__": len(tensors) - 1}
    if isinstance(obj, np.ndarray):
        tensors.append(torch.from_numpy(np.ascontiguousarray(obj)))
        return {"__ndarray__": len(tensors) - 1}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {
            "__map__": [
                [encode(k, tensors, f"{path}.<key>"), encode(v, tensors, f"{path}[{k!r}]")]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"checkpoint state at {path}: cannot store a {type(obj).__name__}")


def decode(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        if "__map__" in obj:
            return {decode(k, tensors): decode(v, tensors) for k, v in obj["__map__"]}
        raise CheckpointError(f"unknown entry in state.json: {sorted(obj)}")
    return obj


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"unknown dtype {name!r} in state.json")
    return dtype


# --------------------------------------------------------------------------- host snapshot


@dataclass
class HostSnapshot:
    """A consistent copy of the state in host memory, ready to be written by another thread."""

    step: int
    skeleton: Any
    tensors: list[torch.Tensor]
    extra: dict[str, Any]
    metric: float | None
    stall_seconds: float

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


class _HostBuffers:
    """Host buffers reused across saves (pinned for GPU tensors: allocating pinned memory is slow)."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def copy(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        any_cuda = False
        for i, src in enumerate(sources):
            src = src.detach()
            pin = src.is_cuda
            any_cuda |= pin
            buf = self._buffers[i] if i < len(self._buffers) else None
            if (
                buf is None
                or buf.shape != src.shape
                or buf.dtype != src.dtype
                or buf.is_pinned() != pin
            ):
                buf = torch.empty(src.shape, dtype=src.dtype, device="cpu", pin_memory=pin)
                if i < len(self._buffers):
                    self._buffers[i] = buf
                else:
                    self._buffers.append(buf)
            buf.copy_(src, non_blocking=pin)
            out.append(buf)
        del self._buffers[len(sources) :]
        if any_cuda:
            torch.cuda.synchronize()
        return out


# --------------------------------------------------------------------------- files


def _write_file(path: Path, chunks: list[memoryview | bytes]) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return {"sha256": digest.hexdigest(), "bytes": size}


def _step_dir_name(step: int) -> str:
    return f"step-{step:09d}"


@dataclass
class Checkpoint:
    """A checkpoint loaded from disk."""

    step: int
    state: Any
    extra: dict[str, Any]
    metric: float | None
    path: Path


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify one checkpoint folder.

    Raises:
        CheckpointError: the manifest is missing or a file does not match it.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path / MANIFEST} is missing (write never finished)") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path / MANIFEST} is not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format {manifest.get('format')!r}")
    blobs: dict[str, bytearray] = {}
    for name, expected in manifest["files"].items():
        data = bytearray((path / name).read_bytes())
        if len(data) != expected["bytes"]:
            raise CheckpointError(
                f"{path / name}: {len(data)} bytes, manifest says {expected['bytes']}"
            )
        if hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise CheckpointError(f"{path / name}: SHA-256 does not match the manifest")
        blobs[name] = data
    doc = json.loads(blobs["state.json"].decode())
    raw = blobs["tensors.bin"]
    tensors = []
    for entry in doc["tensors"]:
        dtype = _dtype(entry["dtype"])
        if entry["nbytes"] == 0:
            t = torch.empty(entry["shape"], dtype=dtype)
        else:
            t = torch.frombuffer(
                raw, dtype=torch.uint8, count=entry["nbytes"], offset=entry["offset"]
            )
            t = t.view(dtype).reshape(entry["shape"])
        tensors.append(t.to(map_location) if str(map_location) != "cpu" else t)
    state = decode(doc["skeleton"], tensors)
    return Checkpoint(
        int(manifest["step"]), state, doc.get("extra", {}), manifest.get("metric"), path
    )

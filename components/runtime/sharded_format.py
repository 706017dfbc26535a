"""The sharded checkpoint format (:mod:`components.runtime.sharded_checkpoint` writes and finds it):
folder names, what of a trainer's state goes through DCP and what is each rank's own, and the
manifest that marks a folder complete (size and SHA-256 of every file)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.runtime.ckpt_folder import MANIFEST
from components.runtime.ckpt_format import Checkpoint, CheckpointError, decode, encode

FORMAT = "sharded-1"


def step_dir_name(step: int) -> str:
    return f"step-{step:09d}"


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


@dataclass
class ShardedCheckpoint(Checkpoint):
    """A verified sharded checkpoint: ``state`` is this rank's own part (``{"trainer": ...,
    "rng": ...}``, empty when it was saved with another world size); the rest loads in place
    through :meth:`ShardedCheckpoints.restore`."""

    world_size: int = 1


def is_stateful(obj: Any) -> bool:
    return (
        not isinstance(obj, torch.Tensor)
        and callable(getattr(obj, "state_dict", None))
        and callable(getattr(obj, "load_state_dict", None))
    )


def plain_state(obj: Any) -> Any:
    """``obj`` as plain data: modules, optimizers and other stateful objects by their state dicts
    (the single-process checkpoint format stores this)."""
    if isinstance(obj, Mapping):
        return {k: plain_state(v) for k, v in obj.items()}
    if is_stateful(obj):
        return obj.state_dict()
    return obj


def load_plain(objects: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """Restore what :func:`plain_state` saved into the live ``objects`` (single process)."""
    for name, obj in objects.items():
        if name not in saved:
            continue
        if isinstance(obj, torch.Tensor):
            with torch.no_grad():
                obj.copy_(saved[name])
        elif is_stateful(obj):
            obj.load_state_dict(saved[name])
        elif isinstance(obj, Mapping) and isinstance(saved[name], Mapping):
            load_plain(obj, saved[name])


def split_state(objects: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(DCP part, this rank's own part)`` of a trainer's state."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    modules = [v for v in objects.values() if isinstance(v, torch.nn.Module)]
    shared: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            shared[name] = get_model_state_dict(obj)
        elif isinstance(obj, torch.optim.Optimizer):
            shared[name] = get_optimizer_state_dict(the_module(modules, name), obj)
        elif isinstance(obj, torch.Tensor):
            shared[name] = obj
        elif is_stateful(obj):
            own[name] = obj.state_dict()
        else:
            own[name] = obj
    return shared, own


def the_module(modules: list[torch.nn.Module], name: str) -> torch.nn.Module:
    if len(modules) != 1:
        raise CheckpointError(
            f"checkpoint state: the optimizer {name!r} needs exactly one model (nn.Module) beside "
            f"it in the same state, found {len(modules)}"
        )
    return modules[0]


def save_own(path: Path, state: Any) -> None:
    tensors: list[torch.Tensor] = []
    skeleton = encode(state, tensors, "state")
    buf = io.BytesIO()
    torch.save({"skeleton": json.dumps(skeleton), "tensors": [t.detach().cpu() for t in tensors]},
               buf)  # fmt: skip
    with open(path, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def load_own(path: Path) -> Any:
    doc = torch.load(path, map_location="cpu", weights_only=True)
    return decode(json.loads(doc["skeleton"]), list(doc["tensors"]))


def digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "bytes": size}


def verify(path: Path) -> dict[str, Any]:
    """The manifest of a complete sharded checkpoint folder.

    Raises:
        CheckpointError: no manifest (never finished), or a file is missing or does not match.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path / MANIFEST} is missing (write never finished)") from exc
    except ValueError as exc:
        raise CheckpointError(f"{path / MANIFEST} is not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sharded checkpoint ({manifest.get('format')!r})")
    for name, expected in manifest["files"].items():
        try:
            got = digest(path / name)
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path / name} is missing") from exc
        if got["bytes"] != expected["bytes"]:
            raise CheckpointError(
                f"{path / name}: {got['bytes']} bytes, manifest says {expected['bytes']}"
            )
        if got["sha256"] != expected["sha256"]:
            raise CheckpointError(f"{path / name}: SHA-256 does not match the manifest")
    return dict(manifest)


def tensors_of(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensors_of(v)]
    return []

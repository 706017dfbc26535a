"""Sharded checkpoints of a multi-process trial: ``torch.distributed.checkpoint`` (DCP), atomic whole.

The single-process format (:mod:`components.runtime.checkpoint`) is left as it is; the harness picks
this one when the trial has more than one rank. Same folder, same names, same guarantees::

    checkpoints/
        .tmp-<step>-<attempt>/      every rank writes here; never loaded
        step-000000120/
            __<r>_0.distcp .metadata   DCP: models and optimizers, sharded per rank (resharded on
                                       load onto another world size where the model allows it)
            rank-00000.pt ...          each rank's own non-tensor state: RNG, sampler (no pickle:
                                       tensors and plain containers, loaded with weights_only)
            MANIFEST.json              written last by rank 0: step, metric, world size, size and
                                       SHA-256 of every file (the completion marker)
        LATEST                      swapped atomically after the rename

A save copies the state to host memory (``dcp.async_save`` stages it: the only stall) and writes in
the background; the next save waits for the previous one. Only after every rank's write finished (a
barrier of the checkpoint group) does rank 0 fsync, write the manifest, rename the folder and swap
``LATEST``; then it keeps the last ``keep`` and the best. On load rank 0 picks the newest folder
whose manifest verifies (``LATEST`` first) and tells every rank; a torn one is skipped.

What a state holds (the dict ``state()`` returns in ``trial.checkpoint(step, state)``): an
``nn.Module`` (DDP or FSDP too) and ``torch.optim.Optimizer`` s go through DCP with
``get_state_dict``/``set_state_dict`` (optimizers belong to the one module of the state); a tensor
goes through DCP as a replicated value; anything else (an object with ``state_dict`` and
``load_state_dict``, plain values) is the rank's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.fsio import atomic_write_text, fsync_dir
from components.runtime.ckpt_format import Checkpoint, CheckpointError, _decode, _encode
from components.runtime.distributed import Dist

log = logging.getLogger(__name__)

FORMAT = "sharded-1"
MANIFEST = "MANIFEST.json"
LATEST = "LATEST"
_DIR_RE = re.compile(r"^step-(\d{9,})$")


def _step_dir_name(step: int) -> str:
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


def _split(objects: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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
            shared[name] = get_optimizer_state_dict(_the_module(modules, name), obj)
        elif isinstance(obj, torch.Tensor):
            shared[name] = obj
        elif is_stateful(obj):
            own[name] = obj.state_dict()
        else:
            own[name] = obj
    return shared, own


def _the_module(modules: list[torch.nn.Module], name: str) -> torch.nn.Module:
    if len(modules) != 1:
        raise CheckpointError(
            f"checkpoint state: the optimizer {name!r} needs exactly one model (nn.Module) beside "
            f"it in the same state, found {len(modules)}"
        )
    return modules[0]


def _save_own(path: Path, state: Any) -> None:
    tensors: list[torch.Tensor] = []
    skeleton = _encode(state, tensors, "state")
    buf = io.BytesIO()
    torch.save({"skeleton": json.dumps(skeleton), "tensors": [t.detach().cpu() for t in tensors]},
               buf)  # fmt: skip
    with open(path, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def _load_own(path: Path) -> Any:
    doc = torch.load(path, map_location="cpu", weights_only=True)
    return _decode(json.loads(doc["skeleton"]), list(doc["tensors"]))


def _digest(path: Path) -> dict[str, Any]:
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
            got = _digest(path / name)
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path / name} is missing") from exc
        if got["bytes"] != expected["bytes"]:
            raise CheckpointError(
                f"{path / name}: {got['bytes']} bytes, manifest says {expected['bytes']}"
            )
        if got["sha256"] != expected["sha256"]:
            raise CheckpointError(f"{path / name}: SHA-256 does not match the manifest")
    return dict(manifest)


class ShardedCheckpoints:
    """A multi-process trial's checkpoints in ``directory`` (every rank builds one, together).

    Args:
        directory: the trial's ``checkpoints/`` folder.
        dist: this process's rank, world size and checkpoint process group.
        attempt: the attempt number (names the temporary folder).
        keep: how many of the newest checkpoints to keep (the best one is kept besides).
        direction: ``minimize`` or ``maximize``: which metric value is "best".
    """

    def __init__(
        self,
        directory: Path,
        *,
        dist: Dist,
        attempt: int,
        keep: int = 3,
        direction: str = "minimize",
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dist = dist
        self.attempt = attempt
        self.keep = keep
        self.direction = direction
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_stall_seconds: float | None = None
        self.last_write_seconds: float | None = None
        self.last_bytes: int | None = None
        self.last_saved_step: int | None = None
        self.saves = 0
        if dist.is_main:
            self._clean_temporaries()  # before load(): no rank writes until rank 0 has answered

    # ----------------------------------------------------------------- saving

    def reserve(self, state: Any) -> None:
        """(The single-process manager's pinned buffers; DCP stages by itself.)"""

    def save(
        self,
        step: int,
        state: Any,
        *,
        extra: dict[str, Any] | None = None,
        metric: float | None = None,
        before_commit: Callable[[], None] | None = None,
        block: bool = False,
    ) -> bool:
        """Save ``{"trainer": objects, "rng": ...}`` at ``step`` on every rank (collective).

        Returns:
            False when a checkpoint of this step was already saved (nothing to do).
        """
        import torch.distributed.checkpoint as dcp

        if step == self.last_saved_step:
            return False
        self.wait()
        start = time.perf_counter()
        shared, own = _split(state["trainer"])
        own_state = {"trainer": own, "rng": state.get("rng")}
        tmp = self.directory / f".tmp-{step}-{self.attempt}"
        tmp.mkdir(parents=True, exist_ok=True)
        _save_own(tmp / rank_file(self.dist.rank), own_state)
        future = dcp.async_save(
            {"trainer": shared}, checkpoint_id=str(tmp), process_group=self.dist.checkpoint_group
        )
        self.last_stall_seconds = time.perf_counter() - start
        self.last_bytes = sum(t.numel() * t.element_size() for t in _tensors(shared))
        self.last_saved_step = step
        self.saves += 1
        doc = {"step": step, "metric": metric, "extra": dict(extra or {})}
        self._error = None
        self._thread = threading.Thread(
            target=self._finish_guarded,
            args=(future, tmp, doc, before_commit, start),
            name=f"sharded-checkpoint-{step}",
            daemon=True,
        )
        self._thread.start()
        if block:
            self.wait()
        return True

    def wait(self) -> None:
        """Wait for the background write (and rank 0's commit); re-raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"checkpoint write failed: {err}") from err

    @property
    def writing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def estimated_save_seconds(self, state_bytes: int | None = None) -> float:
        """How long a save (stage + write + commit) will take, from the last one."""
        if self.last_write_seconds is not None:
            return (self.last_stall_seconds or 0.0) + self.last_write_seconds
        nbytes = state_bytes if state_bytes is not None else (self.last_bytes or 0)
        return 1.0 + nbytes / 100e6

    def _finish_guarded(
        self,
        future: Any,
        tmp: Path,
        doc: dict[str, Any],
        before_commit: Callable[[], None] | None,
        start: float,
    ) -> None:
        try:
            import torch.distributed as tdist

            future.result()  # this rank's shards are on disk (DCP fsyncs them)
            if tdist.is_initialized():
                tdist.barrier(group=self.dist.checkpoint_group)  # ... and every other rank's
            if self.dist.is_main:
                self._commit(tmp, doc, before_commit)
            self.last_write_seconds = time.perf_counter() - start
        except BaseException as exc:  # reported to the training thread by wait()
            log.exception("sharded checkpoint of step %d failed", doc["step"])
            self._error = exc

    def _commit(
        self, tmp: Path, doc: dict[str, Any], before_commit: Callable[[], None] | None
    ) -> None:
        files = {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "step": doc["step"],
            "metric": doc["metric"],
            "world_size": self.dist.world_size,
            "created": time.time(),
            "extra": doc["extra"],
            "files": files,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=1))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        final = self.directory / _step_dir_name(doc["step"])
        if final.exists():
            old = self.directory / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(self.directory)
        if before_commit is not None:
            before_commit()
        atomic_write_text(self.directory / LATEST, final.name + "\n")
        self._prune()
        log.info("sharded checkpoint step %d: %d files, %d ranks", doc["step"], len(files),
                 self.dist.world_size)  # fmt: skip

    # ----------------------------------------------------------------- loading

    def list(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.directory.iterdir():
            m = _DIR_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def latest_pointer(self) -> Path | None:
        try:
            name = (self.directory / LATEST).read_text().strip()
        except OSError:
            return None
        return self.directory / name if _DIR_RE.match(name) else None

    def _pick(self) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """Rank 0: ``(folder, manifest, error)`` of the newest complete checkpoint."""
        candidates = [p for _, p in self.list()]
        pointer = self.latest_pointer()
        if pointer is not None and pointer in candidates:
            candidates.remove(pointer)
            candidates.insert(0, pointer)
        errors = []
        for path in candidates:
            try:
                return str(path), verify(path), None
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                log.warning("checkpoint %s is damaged, trying the previous one: %s", path, exc)
                errors.append(f"{path.name}: {exc}")
        if errors:
            return None, None, f"no loadable checkpoint in {self.directory}: " + "; ".join(errors)
        return None, None, None

    def load(self, map_location: str | torch.device = "cpu") -> ShardedCheckpoint | None:
        """The newest complete checkpoint, the same on every rank (collective); None: none.

        Only the manifest and this rank's own part are read here; models and optimizers load in
        place through :meth:`restore`.

        Raises:
            CheckpointError: checkpoints exist but none of them verifies.
        """
        picked = self._pick() if self.dist.is_main else None
        folder, manifest, error = self.dist.broadcast(picked)
        if error:
            raise CheckpointError(error)
        if folder is None or manifest is None:
            return None
        path = Path(folder)
        own: dict[str, Any] = {"trainer": {}}
        saved_world = int(manifest.get("world_size", 0))
        if saved_world == self.dist.world_size:
            own = _load_own(path / rank_file(self.dist.rank))
        else:
            log.info(
                "checkpoint %s was saved by %d ranks, this attempt has %d: models and optimizers "
                "are resharded, each rank's own state (RNG, sampler) starts afresh",
                path.name, saved_world, self.dist.world_size,
            )  # fmt: skip
        self.last_saved_step = int(manifest["step"])
        return ShardedCheckpoint(
            int(manifest["step"]),
            own,
            dict(manifest.get("extra") or {}),
            manifest.get("metric"),
            path,
            world_size=saved_world,
        )

    def restore(self, ckpt: Checkpoint, objects: Mapping[str, Any]) -> None:
        """Load ``ckpt`` into the live ``objects`` (collective: every rank calls it)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        shared, _ = _split(objects)
        if shared:
            loaded = {"trainer": shared}
            dcp.load(loaded, checkpoint_id=str(ckpt.path), process_group=self.dist.checkpoint_group)
            modules = [v for v in objects.values() if isinstance(v, torch.nn.Module)]
            for name, obj in objects.items():
                if isinstance(obj, torch.nn.Module):
                    set_model_state_dict(obj, loaded["trainer"][name])
                elif isinstance(obj, torch.optim.Optimizer):
                    set_optimizer_state_dict(
                        _the_module(modules, name), obj, loaded["trainer"][name]
                    )
                # tensors were loaded in place
        own = ckpt.state.get("trainer") or {}
        for name, obj in objects.items():
            if (
                name in own
                and is_stateful(obj)
                and not isinstance(obj, torch.nn.Module | torch.optim.Optimizer)
            ):
                obj.load_state_dict(own[name])

    # ----------------------------------------------------------------- housekeeping

    def _clean_temporaries(self) -> None:
        for p in self.directory.iterdir():
            if p.name.startswith((".tmp-", ".old-", f".{LATEST}.tmp")):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def _prune(self) -> None:
        entries = self.list()
        keep = {p for _, p in entries[: self.keep]}
        best: tuple[float, Path] | None = None
        for _, p in entries:
            try:
                metric = json.loads((p / MANIFEST).read_text()).get("metric")
            except (OSError, ValueError):
                continue
            if metric is None or metric != metric:  # None or NaN
                continue
            key = metric if self.direction == "minimize" else -metric
            if best is None or key < best[0]:
                best = (key, p)
        if best is not None:
            keep.add(best[1])
        pointer = self.latest_pointer()
        if pointer is not None:
            keep.add(pointer)
        for _, p in entries:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []

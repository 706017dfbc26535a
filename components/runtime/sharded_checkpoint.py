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

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from components.fsio import atomic_write_text, fsync_dir
from components.runtime.ckpt_folder import LATEST, MANIFEST, CheckpointFolder
from components.runtime.ckpt_format import Checkpoint, CheckpointError
from components.runtime.distributed import Dist
from components.runtime.sharded_format import (
    FORMAT,
    ShardedCheckpoint,
    digest,
    is_stateful,
    load_own,
    rank_file,
    save_own,
    split_state,
    step_dir_name,
    tensors_of,
    the_module,
    verify,
)

log = logging.getLogger(__name__)


class ShardedCheckpoints(CheckpointFolder):
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
        shared, own = split_state(state["trainer"])
        own_state = {"trainer": own, "rng": state.get("rng")}
        tmp = self.directory / f".tmp-{step}-{self.attempt}"
        tmp.mkdir(parents=True, exist_ok=True)
        save_own(tmp / rank_file(self.dist.rank), own_state)
        future = dcp.async_save(
            {"trainer": shared}, checkpoint_id=str(tmp), process_group=self.dist.checkpoint_group
        )
        self.last_stall_seconds = time.perf_counter() - start
        self.last_bytes = sum(t.numel() * t.element_size() for t in tensors_of(shared))
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
        files = {p.name: digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
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
        final = self.directory / step_dir_name(doc["step"])
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
            own = load_own(path / rank_file(self.dist.rank))
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

        shared, _ = split_state(objects)
        if shared:
            loaded = {"trainer": shared}
            dcp.load(loaded, checkpoint_id=str(ckpt.path), process_group=self.dist.checkpoint_group)
            modules = [v for v in objects.values() if isinstance(v, torch.nn.Module)]
            for name, obj in objects.items():
                if isinstance(obj, torch.nn.Module):
                    set_model_state_dict(obj, loaded["trainer"][name])
                elif isinstance(obj, torch.optim.Optimizer):
                    set_optimizer_state_dict(
                        the_module(modules, name), obj, loaded["trainer"][name]
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

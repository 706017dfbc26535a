"""Atomic, verified, background checkpoints (DESIGN.md, "Checkpoints").

A save copies every tensor of the state to host memory (pinned when the tensor lives on a GPU):
that copy is the only stall on the training loop. A background thread then writes the copy to a
temporary folder, fsyncs it, renames it to ``step-<N>``, and swaps the ``LATEST`` pointer atomically
(write a temporary file, fsync, ``os.replace``, fsync the folder). The last ``keep`` checkpoints and
the best one (by the objective recorded with each save) are kept.

Layout of one checkpoint folder::

    step-000000120/
        tensors.bin     raw bytes of every tensor, back to back (64-byte aligned)
        state.json      the state's structure, with tensors replaced by references into tensors.bin
        MANIFEST.json   written last: step, metric, size and SHA-256 of the two files above

The format needs no pickle: loading a checkpoint never runs code. A checkpoint whose manifest is
missing or whose files do not match it is skipped, and the next older one is loaded instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from components.fsio import atomic_write_text, fsync_dir
from components.runtime.ckpt_folder import LATEST, CheckpointFolder
from components.runtime.ckpt_format import (
    FORMAT_VERSION,
    MANIFEST,
    Checkpoint,
    CheckpointError,
    HostSnapshot,
    _HostBuffers,
    _step_dir_name,
    _write_file,
    encode,
    read_checkpoint,
)

__all__ = [
    "LATEST",
    "MANIFEST",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "HostSnapshot",
    "read_checkpoint",
]

log = logging.getLogger(__name__)

_ALIGN = 64


class CheckpointManager(CheckpointFolder):
    """Saves and loads a trial's checkpoints in ``directory``.

    Args:
        directory: the trial's ``checkpoints/`` folder (created if missing).
        keep: how many of the newest checkpoints to keep (the best one is kept besides).
        direction: ``minimize`` or ``maximize``: which metric value is "best".
    """

    def __init__(self, directory: Path, *, keep: int = 3, direction: str = "minimize") -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be minimize or maximize, got {direction!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.direction = direction
        self._buffers = _HostBuffers()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_stall_seconds: float | None = None
        self.last_write_seconds: float | None = None
        self.last_bytes: int | None = None
        self.last_saved_step: int | None = None
        self.saves = 0
        self._clean_temporaries()

    # ----------------------------------------------------------------- saving

    def snapshot(
        self,
        step: int,
        state: Any,
        *,
        extra: dict[str, Any] | None = None,
        metric: float | None = None,
    ) -> HostSnapshot:
        """Copy ``state`` to host memory (waits for the previous background write first)."""
        tensors: list[torch.Tensor] = []
        skeleton = encode(state, tensors, "state")
        if any(t.is_cuda for t in tensors):
            torch.cuda.synchronize()  # the GPU catching up on queued steps is no stall
        start = time.perf_counter()
        self.wait()
        host = self._buffers.copy(tensors)
        stall = time.perf_counter() - start
        return HostSnapshot(step, skeleton, host, dict(extra or {}), metric, stall)

    def reserve(self, state: Any) -> None:
        """Allocate the host buffers for ``state`` now (pinned memory is slow to allocate)."""
        tensors: list[torch.Tensor] = []
        encode(state, tensors, "state")
        self._buffers.copy(tensors)

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
        """Save ``state`` as the checkpoint of ``step``; the write runs in the background.

        Args:
            step: the number of completed training steps the state holds.
            state: nested dicts/lists/tuples of tensors, numpy arrays and JSON scalars.
            extra: small JSON-able data stored beside the state (e.g. undelivered metrics).
            metric: the objective's latest value, used to keep the best checkpoint.
            before_commit: called in the writer thread after the files are durable and before
                ``LATEST`` moves (e.g. flush the TensorBoard writer up to this step).
            block: wait for the write to finish.

        Returns:
            False when a checkpoint of this step was already saved (nothing to do).
        """
        if step == self.last_saved_step:
            return False
        snap = self.snapshot(step, state, extra=extra, metric=metric)
        self.last_stall_seconds = snap.stall_seconds
        self.last_bytes = snap.nbytes
        self.last_saved_step = step
        self.saves += 1
        self._thread = threading.Thread(
            target=self._write_guarded, args=(snap, before_commit), name="checkpoint-writer"
        )
        self._thread.daemon = True
        self._thread.start()
        if block:
            self.wait()
        return True

    def estimated_save_seconds(self, state_bytes: int | None = None) -> float:
        """How long a save (copy + write) will take, from the last one (or a 100 MB/s guess)."""
        if self.last_write_seconds is not None:
            return (self.last_stall_seconds or 0.0) + self.last_write_seconds
        nbytes = state_bytes if state_bytes is not None else (self.last_bytes or 0)
        return 0.5 + nbytes / 100e6

    def _write_guarded(self, snap: HostSnapshot, before_commit: Callable[[], None] | None) -> None:
        try:
            self.write(snap, before_commit=before_commit)
        except BaseException as exc:  # reported to the training thread by wait()
            log.exception("checkpoint write of step %d failed", snap.step)
            self._error = exc

    def write(self, snap: HostSnapshot, *, before_commit: Callable[[], None] | None = None) -> Path:
        """Write a host snapshot durably and make it the latest checkpoint (any thread)."""
        start = time.perf_counter()
        final = self.directory / _step_dir_name(snap.step)
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        table = []
        chunks: list[memoryview | bytes] = []
        offset = 0
        for t in snap.tensors:
            nbytes = t.numel() * t.element_size()
            table.append(
                {"dtype": str(t.dtype), "shape": list(t.shape), "offset": offset, "nbytes": nbytes}
            )
            if nbytes:
                chunks.append(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # type: ignore[arg-type]
            pad = -(offset + nbytes) % _ALIGN
            if pad:
                chunks.append(b"\0" * pad)
            offset += nbytes + pad
        files = {"tensors.bin": _write_file(tmp / "tensors.bin", chunks)}
        state_json = json.dumps({"skeleton": snap.skeleton, "tensors": table, "extra": snap.extra})
        files["state.json"] = _write_file(tmp / "state.json", [state_json.encode()])
        manifest = {
            "format": FORMAT_VERSION,
            "step": snap.step,
            "metric": snap.metric,
            "created": time.time(),
            "files": files,
        }
        _write_file(tmp / MANIFEST, [json.dumps(manifest, indent=1).encode()])
        fsync_dir(tmp)
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
        self.last_write_seconds = time.perf_counter() - start
        log.info(
            "checkpoint step %d: %.1f MB, stall %.3fs, write %.3fs",
            snap.step,
            snap.nbytes / 1e6,
            snap.stall_seconds,
            self.last_write_seconds,
        )
        return final

    # ----------------------------------------------------------------- loading

    def load(self, map_location: str | torch.device = "cpu") -> Checkpoint | None:
        """The newest checkpoint that verifies (``LATEST`` first); None when there is none.

        A damaged checkpoint is logged and skipped.

        Raises:
            CheckpointError: checkpoints exist but none of them verifies.
        """
        candidates = [p for _, p in self.list()]
        pointer = self.latest_pointer()
        if pointer is not None and pointer in candidates:
            candidates.remove(pointer)
            candidates.insert(0, pointer)
        errors = []
        for path in candidates:
            try:
                ckpt = read_checkpoint(path, map_location=map_location)
            except (CheckpointError, OSError, ValueError, KeyError) as exc:
                log.warning("checkpoint %s is damaged, trying the previous one: %s", path, exc)
                errors.append(f"{path.name}: {exc}")
                continue
            self.last_saved_step = ckpt.step
            return ckpt
        if errors:
            raise CheckpointError(
                f"no loadable checkpoint in {self.directory}: " + "; ".join(errors)
            )
        return None

    # ----------------------------------------------------------------- housekeeping

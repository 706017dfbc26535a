"""``search.trials_per_pod`` > 1: a round's trials as a queue on the shared disk that pods claim.

Design (option (b) of the worker-reuse issue): the suggest step asks ``parallelism * k`` trials
per round and emits ``ceil(n / k)`` items instead of one per trial; each item is one train pod
(a *slot*) and carries the whole round (``{"queue", "slot", "slots", "trials": [{"id",
"params"}]}``). A pod runs trials of its round one after another in one process
(:mod:`components.runtime.pod_trials`), claiming each with an ``O_EXCL`` create of
``sweeps/<sweep-id>/queues/<queue-id>/<trial-id>.claim``: a pod whose trial was pruned early
takes the next unclaimed one, so a round ends when its pods run out of work, not when the
slowest fixed batch does. A claim is its slot's for the round: the pod's retry (a preemption, an
application error) resumes the trials its slot claimed and did not finish, first; finished ones
are skipped. Each line of a claim file is one visit of its slot (the first is the claim), which is
the trial's own retry number (``SWEEPYARD_ATTEMPT``) for ``attempts.jsonl``'s accounting.

The queue id hashes the workflow's name and the round's trial ids: a retried suggest with the
same round finds the same queue; a trial handed out again in a later round, or by a resubmitted
sweep, is claimable again there. Pure: no torch, no Optuna.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.contract import CLAIM_SUFFIX, canonical_json, queue_dir

__all__ = ["Queue", "RoundItem", "pod_items", "queue_id"]


def queue_id(trial_ids: Sequence[str], workflow: str) -> str:
    """The round's queue: a hash of the workflow's name and its trial ids, in order."""
    return hashlib.sha256("\n".join([workflow, *trial_ids]).encode()).hexdigest()[:12]


def pod_items(
    trials: Sequence[dict[str, str]], per_pod: int, workflow: str
) -> list[dict[str, str]]:
    """The round's fan-out items: ``ceil(len(trials) / per_pod)`` pods (``[]`` for no trial),
    each ``{"id": "<queue>-<slot>", "params": <the RoundItem as JSON>}``; ``trials`` are the
    suggest step's ``{"id", "params"}`` (params canonical JSON)."""
    if not trials:
        return []
    slots = math.ceil(len(trials) / per_pod)
    queue = queue_id([t["id"] for t in trials], workflow)
    listed = [{"id": t["id"], "params": json.loads(t["params"])} for t in trials]
    return [
        {
            "id": f"{queue}-{slot}",
            "params": canonical_json(
                {"queue": queue, "slot": slot, "slots": slots, "trials": listed}
            ),
        }
        for slot in range(slots)
    ]


@dataclass(frozen=True)
class RoundItem:
    """One pod's item: its round's queue, its slot, the round's trials in order."""

    queue: str
    slot: int
    slots: int
    trials: tuple[tuple[str, dict[str, Any]], ...]

    @classmethod
    def from_json(cls, raw: str) -> RoundItem:
        """Parse ``--pod-trials``. Raises ValueError."""
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("trials"), list):
            raise ValueError("not an object with a 'trials' list")
        trials = []
        for t in doc["trials"]:
            if not isinstance(t, dict) or not isinstance(t.get("params"), dict):
                raise ValueError(f"a trial is not {{'id', 'params'}}: {t!r}")
            trials.append((str(t["id"]), t["params"]))
        queue, slot, slots = str(doc.get("queue", "")), doc.get("slot"), doc.get("slots")
        if not queue.isalnum() or not isinstance(slot, int) or not isinstance(slots, int):
            raise ValueError("'queue', 'slot' and 'slots' are missing or not valid")
        if not 0 <= slot < slots or not trials:
            raise ValueError(f"slot {slot} of {slots}, {len(trials)} trials")
        return cls(queue, slot, slots, tuple(trials))

    def order(self) -> list[tuple[str, dict[str, Any]]]:
        """The order this slot tries to claim in: its share first (``slot``, ``slot + slots``,
        ...: pods start on different trials), then the rest of the round in order."""
        own = list(self.trials[self.slot :: self.slots])
        return own + [t for t in self.trials if t not in own]


class Queue:
    """The claim files of one round (``sweeps/<sweep-id>/queues/<queue-id>/``)."""

    def __init__(self, shared: Path, sweep_id: str, queue: str) -> None:
        self.dir = queue_dir(shared, sweep_id, queue)

    def _path(self, tid: str) -> Path:
        return self.dir / f"{tid}{CLAIM_SUFFIX}"

    def visits(self, tid: str) -> list[int]:
        """The slot of each visit of the trial's claim (the first is the claimant); [] if none."""
        try:
            lines = self._path(tid).read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(int(json.loads(line)["slot"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed pod: not a visit
        return out

    def owner(self, tid: str) -> int | None:
        seen = self.visits(tid)
        return seen[0] if seen else None

    def claim(self, tid: str, slot: int) -> bool:
        """Claim the trial for ``slot`` (atomic: ``O_EXCL``); False when another claimed it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._path(tid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, _visit(slot))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def revisit(self, tid: str, slot: int) -> None:
        """Record another visit of a trial this slot claimed (its pod's retry resumes it)."""
        with open(self._path(tid), "ab") as f:
            f.write(_visit(slot))
            f.flush()
            os.fsync(f.fileno())


def _visit(slot: int) -> bytes:
    return (json.dumps({"slot": slot, "time": round(time.time(), 3)}) + "\n").encode()


def slot_trials(shared_dirs: Sequence[Path], sweep_id: str, raw: object) -> list[str]:
    """The trials the pod of item ``raw`` (its ``params`` input) claimed, in the round's order;
    [] when ``raw`` is not a pod's item or nothing is claimed yet (``make status``)."""
    if not isinstance(raw, str) or '"queue"' not in raw:
        return []
    try:
        item = RoundItem.from_json(raw)
    except ValueError:
        return []
    for root in shared_dirs:
        queue = Queue(root, sweep_id, item.queue)
        if queue.dir.is_dir():
            return [tid for tid, _ in item.trials if queue.owner(tid) == item.slot]
    return []

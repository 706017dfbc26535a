"""What a trial is, as the CLI describes it (:class:`TrialSpec`), and the trainer's signatures.

Its own module, importing nothing of the trial's runtime, so the modules that run a trial
(:mod:`.trial_run`, :mod:`.rank_run`, :mod:`.trial_connect`, :mod:`.lineage`) can all name it
without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.budget import Budget
from components.contract import CHECKPOINTS_DIR

if TYPE_CHECKING:
    from components.runtime.harness import Harness
    from components.runtime.trial import AttemptLog


@dataclass
class TrialSpec:
    """One trial, as the CLI describes it."""

    sweep_id: str
    trial_id: str
    params: dict[str, Any]
    data: Path | None  # None: the sweep has no data
    data_hash: str
    objective: str = "val_loss"
    direction: str = "minimize"
    checkpoint_interval: float = 60.0
    keep_checkpoints: int = 3
    max_app_errors: int = 3
    flush_timeout: float = 30.0
    device: str = "auto"
    threads: int = 1
    pruner: dict[str, Any] | None = None
    checkpoint_dir: str = CHECKPOINTS_DIR  # the harness's, inside the trial folder
    budget: Budget | None = None  # the sweep's: no new trial starts once it is spent
    topology: Any = None  # a command's torchrun (components.runtime.distributed.Topology)


TrainFn = Callable[["TrialSpec", "Harness", "AttemptLog"], tuple[int, dict[str, float]]]
ValidateFn = Callable[[dict[str, Any]], Any]

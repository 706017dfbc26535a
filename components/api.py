"""The public API of a Python trainer: ``from components.api import Trial, GiveUp, Pruned``.

A trainer is a function ``train(trial: Trial, params: Params) -> None`` (``Params`` a dataclass of
the params it accepts; or keyword parameters after ``trial``). The supervisor
(``python -m components.train --trainer-function module:function``) builds the :class:`Trial` and
owns everything else: resume, RNG states, checkpoint files, MLflow and TensorBoard, SIGTERM, exit
codes, Sentry, ``attempts.jsonl``, ``result.json``. See README, "The trainer contract".

A distributed trial (``--nproc-per-node``/``--nnodes``, run under torchrun) calls the same
function on every rank: ``trial.rank``, ``trial.world_size``, ``trial.local_rank`` and
``trial.is_main`` say where it runs; the process group is initialised before the call (gloo on CPU,
NCCL on CUDA, where ``trial.device`` is ``cuda:<local rank>``). Rank 0 alone tracks; every rank
stops, is pruned and checkpoints at the same step; checkpoints are sharded
(:mod:`components.runtime.sharded_checkpoint`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from components.runtime.distributed import Dist
from components.runtime.harness import Harness
from components.runtime.logger import scalar
from components.runtime.pruning import Pruned
from components.runtime.rng import rng_state, set_rng_state
from components.runtime.sharded_format import load_plain, plain_state
from components.runtime.spans import SPANS
from components.runtime.trial import GiveUp

__all__ = ["GiveUp", "Pruned", "Trial", "reports"]

StateFn = Callable[[], Mapping[str, Any]]
METRICS_ATTR = "__sweepyard_metrics__"


def reports(*metrics: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the metrics a trainer logs: ``@reports("train_loss", "val_loss")`` above ``train``.

    The config check refuses early stopping on a metric the trainer does not declare (a trainer
    without the declaration is not checked).
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, METRICS_ATTR, tuple(metrics))
        return fn

    return mark


class Trial:
    """One trial as its trainer sees it.

    Attributes:
        trial_id: the trial's id (a hash of its params).
        sweep_id: the sweep's id.
        params: the trial's params as given (JSON values).
        data: the folder of the fetched data (None when the sweep has no `data`).
        device: ``cuda`` when available (and not ``--device cpu``), else ``cpu``.
        attempt: this attempt's number, 1-based.
        model_dir: where :meth:`save_model` leaves the final model.
        rank: this process's global rank (0 in a 1-process trial).
        world_size: how many processes train the trial (1 unless distributed).
        local_rank: this process's rank on its node (its GPU index on CUDA).
        is_main: whether this is rank 0 (the one that tracks and saves the model).

    Checkpoints: ``state()`` (the callable given to :meth:`checkpoint`) returns a dict whose
    values are live objects — ``nn.Module`` (DDP/FSDP-wrapped too), ``torch.optim.Optimizer``,
    anything with ``state_dict()``/``load_state_dict()`` (a sampler), tensors — or plain state
    (state dicts, numbers). After building them, :meth:`restore` loads a resumed checkpoint into
    them in place (and the RNG states)::

        def state():
            return {"model": model, "opt": opt, "sampler": sampler}

        trial.restore(state)  # a no-op on a fresh start; call it on every rank
        for step in range(trial.start_step, steps):
            ...
            trial.checkpoint(step + 1, state)

    In a 1-process trial each object is saved by its state dict (the supervisor's own format);
    in a distributed one, models and optimizers go sharded through ``torch.distributed.checkpoint``
    (``get_state_dict``/``set_state_dict``: restored onto another world size where the model
    allows it) and the rest — each rank's RNG states and sampler — is kept per rank. Optimizers
    need exactly one module beside them in the state. A trainer that returns state dicts and reads
    :attr:`state` itself still works in a 1-process trial.
    """

    def __init__(
        self,
        harness: Harness,
        *,
        trial_id: str,
        sweep_id: str,
        params: Mapping[str, Any],
        data: Path | None,
        device: torch.device,
        attempt: int,
        model_dir: Path,
        objective: str = "",
        dist: Dist | None = None,
    ) -> None:
        self._harness = harness
        self.trial_id = trial_id
        self.sweep_id = sweep_id
        self.params = dict(params)
        self.data = data
        self.device = device
        self.attempt = attempt
        self.model_dir = model_dir
        self._objective = objective
        self._dist = dist or harness.dist
        self.rank = self._dist.rank
        self.world_size = self._dist.world_size
        self.local_rank = self._dist.local_rank
        if self._dist.enabled and device.type == "cuda" and device.index is None:
            self.device = torch.device("cuda", self.local_rank)  # (set_device'd at init)
        self._rng_restored = False
        self._final: tuple[int, StateFn] | None = None
        self._result: dict[str, float] | None = None
        harness.start_clock()

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0: the rank that tracks and keeps the model."""
        return self._dist.is_main

    @property
    def start_step(self) -> int:
        """0, or the step of the checkpoint this attempt resumes from."""
        return self._harness.start_step

    @property
    def state(self) -> Any:
        """The dict last passed to :meth:`checkpoint` (resumed), or None on a fresh start.

        The first read also restores the RNG states saved with that checkpoint, so read it after
        seeding and building the model (as in the README's example). In a distributed trial it
        holds this rank's own part only (what is neither a module, an optimizer nor a tensor):
        use :meth:`restore`.
        """
        resumed = self._harness.resumed
        if resumed is None:
            return None
        if not self._rng_restored and "rng" in resumed.state:
            set_rng_state(resumed.state["rng"])
            self._rng_restored = True
        return resumed.state["trainer"]

    def restore(self, state: StateFn) -> bool:
        """Load the resumed checkpoint into the objects ``state()`` returns, in place, and restore
        the RNG states; False on a fresh start (nothing loaded).

        Call it after seeding and building the model, optimizer and sampler, on every rank (in a
        distributed trial it is a collective).
        """
        harness = self._harness
        resumed = harness.resumed
        if resumed is None:
            return False
        objects = state()
        if self._dist.enabled:
            harness.checkpoints.restore(resumed, objects)
        else:
            load_plain(objects, resumed.state["trainer"])
        _ = self.state  # the RNG states, once
        return True

    def log(self, step: int, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Record ``metrics`` (floats or 0-dim tensors) at ``step``; never blocks.

        Each (metric, step) reaches MLflow and TensorBoard once, even across resumed attempts.
        In a distributed trial only rank 0's values are recorded (elsewhere it costs nothing).
        """
        self._harness.log(step, metrics)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Time a phase of the trainer's own (``with trial.span("data"): ...``): it is printed
        with the supervisor's spans at the end of the attempt (in its log, ``attempts.jsonl`` and
        ``make status``), and not counted in ``first_step``."""
        start = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            SPANS.add(name, seconds)
            if self._harness.first_step_at is None:
                self._harness.trainer_spans += seconds

    def checkpoint(self, step: int, state: StateFn) -> None:
        """The step boundary after ``step`` completed steps: call it once per step.

        Saves ``state()`` (in the background) when the checkpoint interval is due; the supervisor
        saves the last step's state when the trainer returns. In a distributed trial every rank
        calls it at every step: one small all-reduce makes SIGTERM, pruning and saves happen at
        the same step on all ranks.

        Raises:
            Pruned: the study stopped this trial (do not catch it).
            components.runtime.trial.Preempted: SIGTERM arrived; the state was saved if the write
                fit the grace period (do not catch it).
        """
        harness = self._harness
        if self._final is None and self.device.type == "cuda":
            harness.checkpoints.reserve(self._full_state(state)())  # pinned host buffers, once
        self._final = (step, state)
        decision = harness.decide()
        if decision.prune:
            raise Pruned(harness.prune_step if harness.prune_step is not None else step)
        if decision.stop:
            harness.preempt(
                step, self._full_state(state), metric=self._metric(), fits=decision.save_fits
            )
        if decision.checkpoint_due:
            harness.save(step, self._full_state(state)(), metric=self._metric())

    def save_model(self, model: torch.nn.Module | str | os.PathLike[str]) -> Path:
        """Keep the final model: registered in MLflow when this trial is the sweep's best.

        Args:
            model: an ``nn.Module`` (saved as TorchScript ``model.pt`` when it scripts, and its
                ``weights.pt`` state dict), or a path to a file or folder of any framework
                (copied).

        Returns:
            The model folder (on a rank other than 0 nothing is saved: rank 0 keeps the model).
        """
        if not self._dist.is_main:
            return self.model_dir
        with SPANS.span("model"):
            return self._save_model(model)

    def _save_model(self, model: torch.nn.Module | str | os.PathLike[str]) -> Path:
        tmp = self.model_dir.with_name(f".{self.model_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(model, torch.nn.Module):
            from components.model_folder import save_module

            save_module(model, tmp)
        else:
            source = Path(model)
            if source.is_dir():
                shutil.copytree(source, tmp)
            elif source.is_file():
                tmp.mkdir(parents=True)
                shutil.copy2(source, tmp / source.name)
            else:
                raise GiveUp(f"save_model: {source} is neither a module, a file nor a folder")
        shutil.rmtree(self.model_dir, ignore_errors=True)
        os.replace(tmp, self.model_dir)
        return self.model_dir

    def result(self, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Set the trial's final metrics (default: the last logged value of each metric)."""
        self._result = {k: scalar(v) for k, v in metrics.items()}

    # ----------------------------------------------------------------- for the supervisor

    def _full_state(self, state: StateFn) -> Callable[[], dict[str, Any]]:
        if self._dist.enabled:  # live objects: the sharded manager splits them
            return lambda: {"trainer": state(), "rng": rng_state()}
        return lambda: {"trainer": plain_state(state()), "rng": rng_state()}

    def _metric(self) -> float | None:
        return self._harness.last_metrics().get(self._objective)

    def finish(self) -> tuple[int, dict[str, float]]:
        """After the trainer returned: save the last step, log HParams; ``(step, metrics)``."""
        harness = self._harness
        step = self._final[0] if self._final else harness.start_step
        metrics = {**harness.last_metrics(), **(self._result or {})}
        resumed_final = harness.resumed is not None and harness.resumed.extra.get("final")
        if not (resumed_final and step == harness.start_step):
            hparams = {**self.params, "trial_id": self.trial_id}
            with SPANS.span("hparams"):
                harness.logger.hparams(hparams, metrics, step)
        with SPANS.span("final_checkpoint"):
            if self._final is not None:
                harness.checkpoints.wait()
                harness.save(
                    step,
                    self._full_state(self._final[1])(),
                    extra={"final": True},
                    metric=metrics.get(self._objective),
                    block=True,
                )
            harness.checkpoints.wait()
        return step, metrics

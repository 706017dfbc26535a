"""Early stopping of a trial: the objective's intermediate values reported to the sweep's study.

:func:`from_spec` builds a :class:`StudyPruner` from the train step's ``--pruner`` JSON
(``{"storage": null | "secret" | path, "study": name, "metric": m, "rule": "asha" | "median",
...}``). Each step is reported to the study once (a resumed trial reporting a step again is
ignored), Optuna's pruner (SuccessiveHalving or Median) decides, and a decision to prune is written
to ``sweeps/<s>/trials/<t>/pruned.json`` (atomically) so it survives a kill.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from components.contract import pruned_file, shared_root, trial_dir
from components.fsio import atomic_write_json

log = logging.getLogger("components.train")


class Pruned(Exception):
    """Raised at a step boundary when the study decided to stop this trial. ``.step`` is that step."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class Pruner(Protocol):
    """Decides, from the objective's intermediate values, whether a trial should stop early."""

    metric: str

    def report(self, step: int, value: float) -> bool:
        """Record the value at ``step`` (idempotent per step); True when the trial should stop now."""
        ...

    def pruned_at(self) -> int | None:
        """The step of an earlier decision to prune this trial (survives preemption)."""
        ...


class StudyPruner:
    """Reports to the Optuna trial the suggest step named after this trial (user attr
    ``sweepyard.trial_id``); Optuna's pruner decides.

    ``storage``: the study's storage (default: the one ``open_study`` opened it on); the values
    are reported through it, by the trial's storage id, as ``optuna.Trial.report`` does.
    """

    def __init__(
        self,
        study: Any,
        *,
        metric: str,
        trial_id: str,
        decision: Path,
        final_step: int | None = None,
        storage: Any = None,
    ) -> None:
        from components.search.study import TrialIds, storage_of

        self.metric = metric
        self.final_step = final_step  # a trial that reached it is complete: never pruned there
        self.study = study
        self.storage = storage_of(study) if storage is None else storage
        self.trial_id = trial_id
        self.decision = decision
        self._ids = TrialIds(self.storage, study.study_name)
        self._storage_id: int | None = None
        self._reported: set[int] | None = None

    def _trial(self) -> int | None:
        """The study's storage id of this trial (None: no suggest named it, nothing to report to)."""
        if self._storage_id is None:
            from components.search.rounds import TRIAL_ATTR

            named = [
                t
                for t in self.study.get_trials(deepcopy=False)
                if t.user_attrs.get(TRIAL_ATTR) == self.trial_id
            ]
            if named:  # the last one, as ever
                self._storage_id = self._ids(named[-1].number)
                self._reported = set(named[-1].intermediate_values)
        return self._storage_id

    def report(self, step: int, value: float) -> bool:
        if self.pruned_at() is not None:
            return True
        try:
            return self._report(step, value)
        except Exception as exc:  # the study is advice: a storage hiccup never fails a trial
            log.warning("pruning: could not report step %d to the study: %s", step, exc)
            return False

    def _report(self, step: int, value: float) -> bool:
        from optuna.trial import FrozenTrial, TrialState

        storage_id = self._trial()
        if storage_id is None or not math.isfinite(value):
            return False
        assert self._reported is not None
        storage = self.storage
        if step not in self._reported:
            frozen = storage.get_trial(storage_id)
            if frozen.state != TrialState.RUNNING:
                return False  # told already (a trial rerun after its round): nothing to decide
            if step not in frozen.intermediate_values:  # a resumed attempt re-reporting: ignored
                storage.set_trial_intermediate_value(storage_id, step, value)
            self._reported.add(step)
        frozen = storage.get_trial(storage_id)
        assert isinstance(frozen, FrozenTrial)
        if self.final_step is not None and step >= self.final_step:
            return False  # its budget is run: a rung on the last step must not cut it
        if frozen.state != TrialState.RUNNING or not self.study.pruner.prune(self.study, frozen):
            return False
        atomic_write_json(self.decision, {"step": step, "value": value, "metric": self.metric})
        log.info("pruning: the study stops this trial at step %d (%s=%g)", step, self.metric, value)
        return True

    def pruned_at(self) -> int | None:
        try:
            return int(json.loads(self.decision.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def from_spec(
    spec: Mapping[str, Any] | None, *, trial_id: str, sweep_id: str, final_step: int | None = None
) -> Pruner | None:
    """Build the pruner from the train step's ``--pruner`` JSON (None or {} → no pruning).

    ``final_step`` is the trial's budget (its ``steps`` param): reaching it completes the trial, so
    a rung that falls on it never prunes.

    Raises:
        ValueError: a spec that names no metric or rule, or a study storage that cannot be opened
            (the trial gives up: retrying cannot fix a config).
    """
    if not spec:
        return None
    from components.search.study import open_study, resolve_storage

    metric, rule = spec.get("metric"), spec.get("rule")
    if not metric or rule not in ("asha", "median"):
        raise ValueError(f"--pruner: needs 'metric' and rule asha or median, got {dict(spec)}")
    decision = pruned_file(trial_dir(shared_root(), sweep_id, trial_id))
    storage = resolve_storage(spec.get("storage"), sweep_id)
    study = open_study(
        storage,
        study_name=str(spec.get("study") or sweep_id),
        algorithm="tpe",  # the sampler is the suggest step's: never used here
        direction=str(spec.get("direction", "minimize")),
        seed=0,
        early_stopping=dict(spec),
    )
    return StudyPruner(
        study, metric=str(metric), trial_id=trial_id, decision=decision, final_step=final_step
    )

"""One round of an adaptive search: tell the study what finished, then ask for the next batch.

The study learns each trial's outcome from its ``result.json`` on the shared disk (``done`` →
its objective value, ``pruned`` → pruned at its last reported step, ``failed`` → failed), so the
suggest step needs no message from the trials and telling twice is harmless. A trial that was
asked but never told (a suggest killed mid-round, a round whose trials were lost) is handed out
again before anything new is asked: a retry completes the same round, and a resubmitted sweep id
continues its study without repeating a finished trial.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from components.contract import canonical_json, result_file, shared_root, trial_dir, trial_id
from components.search.spec import distributions, trial_params
from components.search.study import TrialIds, storage_of
from components.space import SearchSpace

log = logging.getLogger("sweepyard.suggest")

TRIAL_ATTR = "sweepyard.trial_id"  # Optuna trial → sweepyard trial id (params stay the user's)
PARAMS_ATTR = "sweepyard.params"
HANDED_ATTR = "sweepyard.handed_out"  # how many rounds handed this trial out
DUPLICATE_ATTR = "sweepyard.duplicate_of"
MAX_HANDOUTS = 3  # a trial lost this many rounds in a row (no result.json) is told failed
MAX_DUPLICATES = 50  # asks in a row that only repeat known params: the space is exhausted


def read_result(sweep_id: str, tid: str) -> dict[str, Any] | None:
    path = result_file(trial_dir(shared_root(), sweep_id, tid))
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _outcome(doc: dict[str, Any]) -> tuple[str, float | None]:
    status = doc.get("status")
    value = (doc.get("objective") or {}).get("value")
    if status == "done" and isinstance(value, int | float) and math.isfinite(value):
        return "complete", float(value)
    if status == "pruned":
        return "pruned", None
    return "fail", None


def tell_finished(study: Any, sweep_id: str) -> int:
    """Tell the study every asked trial whose ``result.json`` says it ended; returns how many."""
    from optuna.trial import TrialState

    told = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = t.user_attrs.get(TRIAL_ATTR)
        doc = read_result(sweep_id, tid) if tid else None
        if doc is None:
            continue
        state, value = _outcome(doc)
        if state == "complete":
            study.tell(t.number, value, skip_if_finished=True)
        elif state == "pruned":
            study.tell(t.number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        told += 1
    return told


def suggest_round(
    study: Any, space: SearchSpace, *, batch: int, max_trials: int, sweep_id: str
) -> list[dict[str, Any]]:
    """Tell what finished, then return the params of the next round ([] = the search is over).

    Trials asked earlier and never told come first (re-used, same params, same trial id); new
    ones are asked until the round has ``batch`` trials or the study ``max_trials`` trial ids.
    """
    told = tell_finished(study, sweep_id)
    dists = distributions(space)
    trials = study.get_trials(deepcopy=False)
    known = {t.user_attrs[TRIAL_ATTR] for t in trials if TRIAL_ATTR in t.user_attrs}
    out = _hand_out_again(study, space, trials, known)
    reused = len(out)
    want = min(batch - len(out), max_trials - len(known))
    duplicates = 0
    while want > 0 and duplicates < MAX_DUPLICATES:
        t = study.ask(dists)
        params = trial_params(space, t.params)
        tid = trial_id(params)
        if tid in known:  # the sampler repeated a trial: it counts once, with the known outcome
            duplicates += 1
            _tell_duplicate(study, t, tid, sweep_id)
            continue
        duplicates = 0
        t.set_user_attr(PARAMS_ATTR, canonical_json(params))  # the Trial that ask gave: public
        t.set_user_attr(TRIAL_ATTR, tid)
        t.set_user_attr(HANDED_ATTR, 1)
        known.add(tid)
        out.append(params)
        want -= 1
    log.info(
        "sweep %s: %d trials told, %d re-used, %d new (%d of max_trials=%d named)",
        sweep_id, told, reused, len(out) - reused, len(known), max_trials,
    )  # fmt: skip
    return out


def _hand_out_again(
    study: Any, space: SearchSpace, trials: list[Any], known: set[str]
) -> list[dict[str, Any]]:
    """The params of the trials asked and never told, handed out again (named first when a
    suggest was killed before naming one); ``known`` gains the trial ids named here."""
    from optuna.trial import TrialState

    dists = distributions(space)
    attrs = _Attrs(study)
    out: list[dict[str, Any]] = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        handed = int(t.user_attrs.get(HANDED_ATTR, 0))
        if TRIAL_ATTR not in t.user_attrs:  # asked by a suggest killed before it named it
            params = trial_params(space, {k: v for k, v in t.params.items() if k in dists})
            if trial_id(params) in known:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            attrs.set(t.number, PARAMS_ATTR, canonical_json(params))
            attrs.set(t.number, TRIAL_ATTR, trial_id(params))
            known.add(trial_id(params))
        elif handed >= MAX_HANDOUTS:
            log.warning(
                "trial %s was lost %d rounds in a row: told failed",
                t.user_attrs[TRIAL_ATTR],
                handed,
            )
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            continue
        else:
            params = json.loads(t.user_attrs[PARAMS_ATTR])
        attrs.set(t.number, HANDED_ATTR, handed + 1)
        out.append(params)
    return out


class _Attrs:
    """User attributes of asked trials, set by trial number through the study's storage: Optuna
    has no public setter on a ``FrozenTrial`` (the storage is looked up only when one is set)."""

    def __init__(self, study: Any) -> None:
        self.study = study
        self._ids: TrialIds | None = None

    def set(self, number: int, key: str, value: Any) -> None:
        if self._ids is None:
            self._ids = TrialIds(storage_of(self.study), self.study.study_name)
        self._ids.storage.set_trial_user_attr(self._ids(number), key, value)


def _tell_duplicate(study: Any, trial: Any, tid: str, sweep_id: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr(DUPLICATE_ATTR, tid)
    doc = read_result(sweep_id, tid)
    state, value = _outcome(doc) if doc else ("fail", None)
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)


def named_trials(study: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every (trial id, params) the study handed out, in the order they were asked."""
    return [
        (t.user_attrs[TRIAL_ATTR], json.loads(t.user_attrs[PARAMS_ATTR]))
        for t in study.get_trials(deepcopy=False)
        if TRIAL_ATTR in t.user_attrs and PARAMS_ATTR in t.user_attrs
    ]

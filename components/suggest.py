"""One round of an adaptive search (``python -m components.suggest``): the next batch of trials.

Opens the sweep's Optuna study (``search.storage``: the journal on the shared disk, or the
database from the Secret), tells it every trial that ended since the last round, and asks it for
the next ``batch`` params. Outputs, like ``plan``'s: ``trials`` (``[{"id", "params"}]``, params as
canonical JSON; with ``trials_per_pod`` > 1 one item per train pod instead, see
:mod:`components.search.pod_queue`) and ``more`` (``true`` when this round has trials, so another round follows to tell
their results; ``false`` once the study has ``max_trials`` trials or the time budget is spent).
``sweeps/<sweep-id>/plan.json`` lists every trial handed out so far. Exit 3 (never retried) for a
bad ``--search`` or a study storage that cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from components.budget import Budget, spent
from components.contract import (
    EXIT_GIVE_UP,
    OUTPUT_MORE,
    OUTPUT_TRIALS,
    canonical_json,
    outputs_dir,
    plan_file,
    resolve_sweep_id,
    shared_root,
    trial_id,
)
from components.durations import parse_duration
from components.fsio import atomic_write_text
from components.search.spec import SearchSpec
from components.step_start import start_step

log = logging.getLogger("sweepyard.suggest")


def run_round(
    spec: SearchSpec, sweep_id: str, budget: Budget | None = None
) -> tuple[list[dict[str, str]], int]:
    """This round's trials (``{"id", "params"}``) and how many the study has named in all: none
    once the time budget, or one of ``budget``'s, is spent.

    Raises:
        StorageError: the study storage cannot be reached.
    """
    from components.search import rounds
    from components.search.study import STARTED_ATTR, open_study, resolve_storage

    study = open_study(
        resolve_storage(spec.storage, sweep_id),
        study_name=sweep_id,
        algorithm=spec.algorithm,
        direction=spec.direction,
        seed=spec.seed,
        early_stopping=spec.early_stopping.model_dump() if spec.early_stopping else None,
    )
    started = float(study.user_attrs.get(STARTED_ATTR, time.time()))
    why = None
    if spec.time_budget and time.time() - started >= parse_duration(spec.time_budget):
        why = f"time budget {spec.time_budget} spent"
    elif budget is not None:
        why = spent(shared_root(), sweep_id, budget)
    if why is not None:
        told = rounds.tell_finished(study, sweep_id)
        log.info("sweep %s: %s (%d told): no new round", sweep_id, why, told)
        params: list[dict[str, Any]] = []
    else:
        params = rounds.suggest_round(
            study, spec.space, batch=spec.batch, max_trials=spec.max_trials, sweep_id=sweep_id
        )
    named = rounds.named_trials(study)
    write_plan(sweep_id, named)
    return [{"id": trial_id(p), "params": canonical_json(p)} for p in params], len(named)


def write_plan(sweep_id: str, named: list[tuple[str, dict[str, Any]]]) -> None:
    """``plan.json``: every trial handed out so far (what the leaderboard and the digest list)."""
    plan = [{"id": tid, "params": canonical_json(p)} for tid, p in named]
    path = plan_file(shared_root(), sweep_id)
    atomic_write_text(path, json.dumps(plan, indent=1) + "\n")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m components.suggest", description=__doc__)
    p.add_argument("--sweep-id", default="", help="empty: the workflow's name")
    p.add_argument("--search", required=True, help="the adaptive search as JSON (SearchSpec)")
    p.add_argument("--budget", default="", help="the sweep's budgets as JSON (Budget)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    start_step("suggest")
    args = _parse_args(argv)
    from components.runtime.alerts import set_alert_tags
    from components.search.study import StorageError

    try:
        sweep_id = resolve_sweep_id(args.sweep_id)
        set_alert_tags(sweep=sweep_id)
        spec = SearchSpec.model_validate_json(args.search)
        budget = Budget.from_json(args.budget) if args.budget else None
        trials, named = run_round(spec, sweep_id, budget)
    except ValidationError as e:
        print(f"suggest: invalid --search: {e.errors()[:3]}", file=sys.stderr)
        return EXIT_GIVE_UP
    except (StorageError, ValueError) as e:
        print(f"suggest: {e}", file=sys.stderr)
        return EXIT_GIVE_UP
    more = "true" if trials else "false"
    if spec.trials_per_pod > 1:  # one item per pod, each claiming trials of the round in turn
        from components.search.pod_queue import pod_items

        workflow = os.environ.get("SWEEPYARD_WORKFLOW_NAME", "")
        trials = pod_items(trials, spec.trials_per_pod, workflow)
    log.info(
        "sweep %s: %d trials this round, %d named in all, more=%s",
        sweep_id,
        len(trials),
        named,
        more,
    )
    if os.environ.get("MLFLOW_TRACKING_URI"):
        from components.runtime.tracking import ensure_sweep_run

        ensure_sweep_run(sweep_id, tags={"sweepyard.trials": str(named)})
    payload = json.dumps(trials)
    outputs = outputs_dir()
    atomic_write_text(outputs / OUTPUT_TRIALS, payload)
    atomic_write_text(outputs / OUTPUT_MORE, more)
    print(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())

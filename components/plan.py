"""Expand a sweep's search space into its trial list (``python -m components.plan``).

Each trial's id is the short hash of its canonical params, so the same params are the same trial
however often they appear, and across retries and resubmits. Duplicates are collapsed and
reported; an empty or oversized plan is an error (exit 3: retrying cannot help).

``sweeps/<sweep-id>/plan.json`` lists every trial of the plan; the ``trials`` output (the fan-out's
items) only those still to run: a resubmitted sweep's finished trials (``result.json`` done or
pruned, nothing left spooled) start no process. Every trial finished: ``[]``, a fan-out Argo
marks Skipped ("Skipped, empty params"), and compare still reads every trial from the shared disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from components.contract import (
    EXIT_GIVE_UP,
    OUTPUT_TRIALS,
    canonical_json,
    outputs_dir,
    plan_file,
    resolve_sweep_id,
    result_file,
    shared_root,
    spool_file,
    trial_dir,
    trial_id,
)
from components.fsio import atomic_write_text
from components.space import SearchSpace
from components.step_start import start_step

log = logging.getLogger("sweepyard.plan")


class PlanError(ValueError):
    """The search space cannot make a usable plan."""


def make_plan(
    space: SearchSpace, *, max_trials: int
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The trial list and the duplicates that were collapsed.

    Returns:
        ``(trials, duplicates)``: trials as ``{"id", "params"}`` (params as canonical JSON, in
        expansion order), and ``{trial-id: times it appeared}`` for params that appeared twice or more.

    Raises:
        PlanError: no trial, or more unique trials than ``max_trials``.
    """
    if space.random is not None and space.random.n_trials is None:
        raise PlanError("random search needs space.random.n_trials")
    if space.size() > max_trials * 10:  # refuse before expanding a runaway grid
        raise PlanError(
            f"the search space expands to {space.size()} trials, far above max_trials={max_trials}"
        )
    expanded = space.expand()
    counts = Counter(trial_id(p) for p in expanded)
    trials: list[dict[str, str]] = []
    seen: set[str] = set()
    for params in expanded:
        tid = trial_id(params)
        if tid not in seen:
            seen.add(tid)
            trials.append({"id": tid, "params": canonical_json(params)})
    if not trials:
        raise PlanError("the search space is empty: no trial to run")
    if len(trials) > max_trials:
        raise PlanError(f"the plan has {len(trials)} trials, more than max_trials={max_trials}")
    return trials, {tid: n for tid, n in counts.items() if n > 1}


def write_plan(shared: Path, sweep_id: str, trials: list[dict[str, str]]) -> Path:
    """``sweeps/<sweep-id>/plan.json``; a resumed sweep whose plan changed says what changed."""
    path = plan_file(shared, sweep_id)
    if path.exists():
        try:
            old = {t["id"] for t in json.loads(path.read_text())}
        except (OSError, ValueError, KeyError, TypeError):
            old = set()
        new = {t["id"] for t in trials}
        if old and old != new:
            log.warning(
                "sweep %s: plan changed since the last submission (%d trials added, %d dropped)",
                sweep_id,
                len(new - old),
                len(old - new),
            )
    atomic_write_text(path, json.dumps(trials, indent=1) + "\n")
    return path


FINISHED = ("done", "pruned")


def finished(shared: Path, sweep_id: str, tid: str) -> bool:
    """Whether a trial finished in an earlier run: its ``result.json`` says done or pruned and it
    left no metric points spooled (the supervisor's own test for exiting at once, which a trial
    with spooled points does not: it delivers them)."""
    folder = trial_dir(shared, sweep_id, tid)
    try:
        result = json.loads(result_file(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(result, dict)
        and result.get("status") in FINISHED
        and not spool_file(folder).exists()
    )


def to_run(shared: Path, sweep_id: str, trials: list[dict[str, str]]) -> list[dict[str, str]]:
    """The trials of the plan that still have to run (the fan-out's items), in plan order."""
    return [t for t in trials if not finished(shared, sweep_id, t["id"])]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m components.plan", description=__doc__)
    p.add_argument(
        "--sweep-id", default="", help="empty: the workflow's name (SWEEPYARD_WORKFLOW_NAME)"
    )
    p.add_argument(
        "--space", required=True, help="the search space as JSON (grid / random / fixed)"
    )
    p.add_argument("--max-trials", type=int, default=256)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    start_step("plan")
    args = _parse_args(argv)
    from components.runtime.alerts import set_alert_tags

    try:
        sweep_id = resolve_sweep_id(args.sweep_id)
        set_alert_tags(sweep=sweep_id)
        space = SearchSpace.model_validate_json(args.space)
        trials, duplicates = make_plan(space, max_trials=args.max_trials)
        shared = shared_root()  # (unset: a SharedRootError, a ValueError)
    except ValidationError as e:
        print(f"plan: invalid --space: {_first_errors(e)}", file=sys.stderr)
        return EXIT_GIVE_UP
    except (PlanError, ValueError) as e:
        print(f"plan: {e}", file=sys.stderr)
        return EXIT_GIVE_UP
    for tid, n in sorted(duplicates.items()):
        log.warning(
            "trial %s appears %d times in the search space: collapsed into one trial", tid, n
        )
    path = write_plan(shared, sweep_id, trials)
    log.info("sweep %s: %d trials planned in %s", sweep_id, len(trials), path)
    pending = to_run(shared, sweep_id, trials)
    if len(pending) < len(trials):
        log.info(
            "sweep %s: %d of %d trials finished in an earlier run: %d to run",
            sweep_id,
            len(trials) - len(pending),
            len(trials),
            len(pending),
        )
    # No trial to run, no child run to hang under the parent run: the exit handler (notify)
    # ends the parent run, creating it if it is missing, so nothing here needs MLflow.
    if pending and os.environ.get("MLFLOW_TRACKING_URI"):
        from components.runtime.tracking import ensure_sweep_run

        run_id = ensure_sweep_run(sweep_id, tags={"sweepyard.trials": str(len(trials))})
        log.info("sweep %s: MLflow parent run %s", sweep_id, run_id)
    payload = json.dumps(pending)
    atomic_write_text(outputs_dir() / OUTPUT_TRIALS, payload)
    print(payload)
    return 0


def _first_errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc or '(top level)'}: {err['msg']}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())

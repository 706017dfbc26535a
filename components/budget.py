"""A sweep's budgets (failed trials, cost, GPU-hours) and whether they are spent (pure but for reads).

``pipelines/build/steps.py`` passes the budget as one JSON argument (``--budget``) to the steps that
decide: a trial's supervisor does not start a trial once a budget is spent (a trial already
running, or retried after a preemption, finishes), an adaptive search's ``suggest`` starts no new
round, and ``compare`` ends the sweep Failed past its failure budget (Katib's
``maxFailedTrialCount``: a trial fails when it gives up or spends its application-error budget;
preemptions never count) and prices it. Every count is read from the trials' own files on the
shared disk (``result.json``, ``attempts.jsonl``), the same record the leaderboard reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.contract import ATTEMPTS_FILE, RESULT_FILE, trials_dir
from components.cost import Prices, Resources, Usage, default_prices, sweep_cost, trial_usage

FINISHED = ("done", "pruned")
SKIPPED = "skipped"  # never started: a budget was spent first


@dataclass(frozen=True)
class Budget:
    """What a sweep may spend, and what one of its trials requests (to price it)."""

    max_failed_trials: int = 0
    max_cost: float | None = None
    max_gpu_hours: float | None = None
    resources: Resources = field(default_factory=lambda: Resources("", 0, 1.0, False))
    prices: Prices = field(default_factory=default_prices)

    @classmethod
    def from_json(cls, text: str) -> Budget:
        """The ``--budget`` argument; raises ValueError naming what is wrong."""
        doc = json.loads(text) if text else {}
        if not isinstance(doc, dict):
            raise ValueError("--budget must be a JSON object")
        res = doc.get("resources") or {}
        prices = doc.get("prices")
        return cls(
            max_failed_trials=int(doc.get("max_failed_trials") or 0),
            max_cost=_optional(doc.get("max_cost")),
            max_gpu_hours=_optional(doc.get("max_gpu_hours")),
            resources=Resources(
                str(res.get("gpu_type") or ""),
                int(res.get("gpu_count") or 0),
                float(res.get("cpus") or 1.0),
                bool(res.get("spot")),
                int(res.get("nodes") or 1),
            ),
            prices=Prices.from_dict(prices) if prices else default_prices(),
        )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def results(shared: Path, sweep_id: str) -> dict[str, dict[str, Any]]:
    """Every trial's ``result.json`` of the sweep, by trial id (unreadable ones left out)."""
    out = {}
    for path in sorted(trials_dir(shared, sweep_id).glob(f"*/{RESULT_FILE}")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            out[path.parent.name] = doc
    return out


def failed(docs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The trials that failed: ended, but neither finished nor skipped."""
    return sorted(t for t, d in docs.items() if d.get("status") not in (*FINISHED, SKIPPED))


def usages(shared: Path, sweep_id: str) -> dict[str, Usage]:
    """Each trial's usage of its nodes, from its ``attempts.jsonl``."""
    trials = trials_dir(shared, sweep_id)
    return {p.parent.name: trial_usage(p) for p in sorted(trials.glob(f"*/{ATTEMPTS_FILE}"))}


def costs(shared: Path, sweep_id: str, budget: Budget) -> dict[str, Any]:
    """The sweep's cost so far (:func:`components.cost.sweep_cost`)."""
    return sweep_cost(usages(shared, sweep_id), budget.resources, budget.prices)


def spent(shared: Path, sweep_id: str, budget: Budget) -> str | None:
    """Why no new trial may start in this sweep (a budget is spent), or None."""
    bad = failed(results(shared, sweep_id))
    if len(bad) > budget.max_failed_trials:
        return (
            f"the sweep's failure budget is spent: {len(bad)} trials failed, more than "
            f"max_failed_trials={budget.max_failed_trials}"
        )
    if budget.max_cost is None and budget.max_gpu_hours is None:
        return None
    total = costs(shared, sweep_id, budget)
    if budget.max_cost is not None and total["cost"] >= budget.max_cost:
        return (
            f"the sweep's cost budget is spent: ${total['cost']:.2f} of max_cost={budget.max_cost}"
        )
    if budget.max_gpu_hours is not None and total["gpu_hours"] >= budget.max_gpu_hours:
        return (
            f"the sweep's GPU budget is spent: {total['gpu_hours']:.2f} GPU-hours of "
            f"max_gpu_hours={budget.max_gpu_hours}"
        )
    return None

"""The compute early stopping saved: trial-steps run against the full budget (pure, no I/O).

``compute saved = 1 - (sum of steps_run) / (sum of budget_steps)`` over the trials that finished
(done or pruned). A trial's budget is its ``steps`` param when it has one, else the most steps a
done trial ran. ``steps_run`` comes from ``result.json``; a result written before it existed falls
back on ``pruned_at_step`` (pruned) or ``step`` (the last step the trial reached).

The leaderboard, the Slack digest and ``make status`` all print :meth:`ComputeSaved.text`, e.g.
``compute saved: 41 % of trial-steps (3,790 of 6,400 run)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FINISHED = ("done", "pruned")


@dataclass(frozen=True)
class ComputeSaved:
    """Trial-steps run and budgeted over the ``trials`` counted (done and pruned ones)."""

    run: int
    budget: int
    trials: int
    pruned: int
    uncounted: int = 0  # finished trials with no step count and no budget to compare against

    @property
    def fraction(self) -> float:
        """Share of the budget not run (0.41 = 41 % saved); 0 when nothing was budgeted."""
        return 1.0 - self.run / self.budget if self.budget else 0.0

    def text(self) -> str:
        """``compute saved: 41 % of trial-steps (3,790 of 6,400 run)``."""
        line = (
            f"compute saved: {round(100 * self.fraction)} % of trial-steps "
            f"({self.run:,} of {self.budget:,} run)"
        )
        if self.uncounted:
            line += f"; {self.uncounted} trial(s) without a step count not counted"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction": round(self.fraction, 4),
            "steps_run": self.run,
            "steps_budget": self.budget,
            "trials": self.trials,
            "pruned": self.pruned,
            "uncounted": self.uncounted,
            "text": self.text(),
        }


def steps_run(result: Mapping[str, Any]) -> int | None:
    """The last step a finished trial reached (None when its result does not say)."""
    for key in ("steps_run", "pruned_at_step", "step"):
        if key == "pruned_at_step" and result.get("status") != "pruned":
            continue
        value = result.get(key)
        if isinstance(value, int) and _count(value):
            return value
    return None


def compute_saved(results: Iterable[Mapping[str, Any]]) -> ComputeSaved | None:
    """Compute saved over the trials' results (``result.json`` documents, any order).

    Only done and pruned trials count: a failed trial neither ran its budget nor was stopped to
    save it. None when no trial finished or none has a budget to compare against.
    """
    finished = [r for r in results if r.get("status") in FINISHED]
    done_steps = [s for r in finished if r.get("status") == "done" and (s := steps_run(r))]
    fallback = max(done_steps, default=0)
    run = budget = trials = pruned = uncounted = 0
    for result in finished:
        ran = steps_run(result)
        params = result.get("params") or {}
        own = params.get("steps") if isinstance(params, Mapping) else None
        allowed = own if isinstance(own, int) and _count(own) and own > 0 else fallback
        if ran is None or not allowed:
            uncounted += 1
            continue
        run += ran
        budget += allowed
        trials += 1
        pruned += result.get("status") == "pruned"
    if not trials:
        return None
    return ComputeSaved(run=run, budget=budget, trials=trials, pruned=pruned, uncounted=uncounted)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

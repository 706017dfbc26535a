"""A sweep's trials as a ranked leaderboard, read from the shared disk (pure: no MLflow, no plots).

``compare`` ranks with it and ``notify`` falls back on it when ``summary.json`` is missing (the
sweep failed before compare ran). A trial the study pruned (early stopping) is listed as
``pruned @ step N`` and ranked after the complete trials: its objective is the last intermediate
value it reported, not a final one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.compute_saved import ComputeSaved, compute_saved, steps_run
from components.contract import RESULT_FILE, plan_file, result_file, trial_dir, trials_dir

DIRECTIONS = ("minimize", "maximize")
METRIC_COLUMNS = ("val_loss", "val_accuracy", "train_loss")


@dataclass
class TrialRow:
    """One trial of the plan, with what its ``result.json`` says (or why there is none)."""

    trial_id: str
    params: dict[str, Any]
    status: str = "failed"  # "done" | "pruned" | "failed" | "skipped" (never started)
    value: float | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    step: int = 0
    attempts: int = 0
    preemptions: int = 0
    app_errors: int = 0
    wall_seconds: float = 0.0
    data_hash: str | None = None
    rank: int | None = None
    pruned_at: int | None = None  # the step the study stopped it at
    steps_run: int | None = None  # the last step it reached (done and pruned trials)
    lost_steps: int = 0  # steps redone after preemptions (attempts.jsonl)
    lost_seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def pruned(self) -> bool:
        return self.status == "pruned"

    @property
    def skipped(self) -> bool:
        """Never started: a budget of the sweep was spent first (neither run nor failed)."""
        return self.status == "skipped"

    @property
    def failed(self) -> bool:
        return self.status not in ("done", "pruned", "skipped")

    @property
    def state(self) -> str:
        """What a person reads: ``done``, ``pruned @ step 120`` or ``failed: <why>``."""
        if self.pruned:
            return f"pruned @ step {self.pruned_at if self.pruned_at is not None else self.step}"
        if self.skipped:
            return self.error or "not started"
        return self.status if self.done else f"failed: {self.error or 'unknown error'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "trial_id": self.trial_id,
            "status": self.status,
            "value": self.value,
            "params": self.params,
            "metrics": self.metrics,
            "step": self.step,
            "preemptions": self.preemptions,
            "app_errors": self.app_errors,
            "run_id": self.run_id,
            "error": self.error,
            "pruned_at_step": self.pruned_at,
            "steps_run": self.steps_run,
            "lost_steps": self.lost_steps,
            "lost_seconds": self.lost_seconds,
        }

    @property
    def lost(self) -> str:
        """The work preemptions made it redo: ``40 steps, 2.1 s`` (empty: none)."""
        if not self.lost_steps:
            return ""
        return f"{self.lost_steps} steps, {self.lost_seconds:.1f} s"


def load_plan(shared: Path, sweep_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``sweeps/<id>/plan.json`` as (trial id, params) pairs.

    Raises:
        ValueError: the plan is missing, not JSON, or not a list of ``{"id", "params"}``; the
            message names the file and the entry.
    """
    path = plan_file(shared, sweep_id)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no plan for sweep {sweep_id!r} (did the plan step run?)"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of trials, got {type(raw).__name__}")
    plan: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError(f"{path}: entry {i} is not an object with a string 'id': {entry!r}")
        params = entry.get("params", "{}")
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError as exc:
                raise ValueError(
                    f"{path}: entry {i} ({entry['id']}): params not JSON: {exc}"
                ) from None
        if not isinstance(params, dict):
            raise ValueError(f"{path}: entry {i} ({entry['id']}): params must be a JSON object")
        plan.append((entry["id"], params))
    return plan


def load_trials(shared: Path, sweep_id: str, objective: str) -> list[TrialRow]:
    """Every trial with its result; a trial without a usable result is failed, not dropped.

    The trials are the plan's (grid, random) followed by any other trial folder holding a
    ``result.json`` (an adaptive search suggests its trials round by round; with no plan at all,
    those are the sweep's trials). A trial is done when its result says so and carries a number
    for ``objective`` (an empty ``objective``: the metric its result names); pruned when the study
    stopped it early and its result says at which step.
    """
    rows = []
    for tid, params in _plan_and_suggested(shared, sweep_id):
        row = TrialRow(trial_id=tid, params=params)
        path = result_file(trial_dir(shared, sweep_id, tid))
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            row.error = "no result"
            rows.append(row)
            continue
        except ValueError as exc:
            row.error = f"unreadable result.json: {exc}"
            rows.append(row)
            continue
        _fill(row, result, objective)
        rows.append(row)
    return rows


def _plan_and_suggested(shared: Path, sweep_id: str) -> list[tuple[str, dict[str, Any]]]:
    suggested = sorted(
        p.parent.name for p in trials_dir(shared, sweep_id).glob(f"*/{RESULT_FILE}") if p.is_file()
    )
    if not plan_file(shared, sweep_id).exists() and suggested:
        plan: list[tuple[str, dict[str, Any]]] = []
    else:
        plan = load_plan(shared, sweep_id)  # raises the clear error when there is neither
    planned = {tid for tid, _ in plan}
    return plan + [(tid, {}) for tid in suggested if tid not in planned]


def _fill(row: TrialRow, result: dict[str, Any], objective: str) -> None:
    metrics = result.get("metrics") or {}
    row.metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    row.run_id = result.get("run_id")
    row.step = int(result.get("step") or 0)
    row.attempts = int(result.get("attempts") or 0)
    row.preemptions = int(result.get("preemptions") or 0)
    row.app_errors = int(result.get("app_errors") or 0)
    row.wall_seconds = float(result.get("wall_seconds") or 0.0)
    row.lost_steps = int(result.get("lost_steps") or 0)
    row.lost_seconds = float(result.get("lost_seconds") or 0.0)
    row.data_hash = result.get("data_hash")
    row.params = result.get("params") or row.params
    row.error = result.get("error")
    obj = result.get("objective") or {}
    if not objective:  # no objective given (notify): the trial's own say is enough
        objective = str(obj.get("metric") or "")
    value = obj.get("value") if obj.get("metric") == objective else row.metrics.get(objective)
    row.steps_run = steps_run(result)
    if result.get("status") == "pruned":
        row.status = "pruned"
        at = result.get("pruned_at_step")
        row.pruned_at = int(at) if isinstance(at, int) else row.step
        row.value = _finite(value)  # the last value reported before the cut
    elif result.get("status") == "skipped":
        row.status = "skipped"
    elif result.get("status") != "done":
        row.status = "failed"
        row.error = row.error or f"status {result.get('status')!r}"
    elif not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        row.status = "failed"
        row.error = f"objective {objective!r} missing or NaN in result.json"
    else:
        row.status = "done"
        row.value = float(value)


def _finite(value: Any) -> float | None:
    return float(value) if _is_number(value) and not math.isnan(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rank(rows: Sequence[TrialRow], direction: str, *, pruned_last: bool = True) -> list[TrialRow]:
    """Done trials best first (ties by trial id), then pruned ones, then failed; sets ``rank``.

    A pruned trial's value is an intermediate one (the last it reported before the cut), so by
    default it ranks after every complete trial (``pruned_last=False``: among them, by value; the
    best is still a complete trial). Failed trials have no rank.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")
    sign = 1.0 if direction == "minimize" else -1.0

    def by_value(r: TrialRow) -> tuple[bool, float, bool, str]:
        value = sign * r.value if r.value is not None else 0.0
        return (r.value is None, value, not r.done, r.trial_id)

    done = sorted((r for r in rows if r.done), key=by_value)
    pruned = sorted((r for r in rows if r.pruned), key=by_value)
    ranked = done + pruned if pruned_last else sorted(done + pruned, key=by_value)
    if ranked and not ranked[0].done and done:  # the best is always a complete trial
        ranked.remove(done[0])
        ranked.insert(0, done[0])
    failed = sorted((r for r in rows if r.failed), key=lambda r: r.trial_id)
    skipped = sorted((r for r in rows if r.skipped), key=lambda r: r.trial_id)
    for i, row in enumerate(ranked, start=1):
        row.rank = i
    for row in failed + skipped:
        row.rank = None
    return ranked + failed + skipped


def saved(rows: Sequence[TrialRow]) -> ComputeSaved | None:
    """The compute early stopping saved over these trials (None when nothing can be said)."""
    return compute_saved(
        {"status": r.status, "steps_run": r.steps_run, "params": r.params} for r in rows
    )


def param_names(rows: Sequence[TrialRow]) -> list[str]:
    """Params that vary across trials first (sorted), then the fixed ones."""
    names = sorted({k for r in rows for k in r.params})
    varying = [n for n in names if len({json.dumps(r.params.get(n)) for r in rows}) > 1]
    return varying + [n for n in names if n not in varying]


def varying_params(rows: Sequence[TrialRow]) -> list[str]:
    names = sorted({k for r in rows for k in r.params})
    return [n for n in names if len({json.dumps(r.params.get(n)) for r in rows}) > 1]


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: Sequence[TrialRow], objective: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the leaderboard (params that vary, objective, metrics, state)."""
    params = varying_params(rows) or param_names(rows)
    metrics = [m for m in METRIC_COLUMNS if m != objective and any(m in r.metrics for r in rows)]
    redone = ["redone"] if any(r.lost_steps for r in rows) else []
    header = ["rank", "trial", *params, objective, *metrics, "step", "preemptions", *redone]
    header.append("status")
    cells = []
    for r in rows:
        cells.append(
            [
                str(r.rank) if r.rank else "-",
                r.trial_id,
                *(fmt(r.params.get(p)) for p in params),
                fmt(r.value),
                *(fmt(r.metrics.get(m)) for m in metrics),
                str(r.step),
                str(r.preemptions),
                *([r.lost] if redone else []),
                r.state,
            ]
        )
    return header, cells


def to_markdown(rows: Sequence[TrialRow], objective: str, extra: Sequence[str] = ()) -> str:
    """The leaderboard table, then the notes (``extra`` last: the sweep's cost, say)."""
    header, cells = table(rows, objective)
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)
    ]

    def line(values: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                v.replace("|", "\\|").ljust(w) for v, w in zip(values, widths, strict=True)
            )
            + " |"
        )

    out = [line(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(c) for c in cells]
    return "\n".join(out) + "\n" + "".join(f"\n{n}\n" for n in [*notes(rows, objective), *extra])


def notes(rows: Sequence[TrialRow], objective: str) -> list[str]:
    """What the table cannot say by itself: the work redone after preemptions, how to read pruned
    trials, and what they saved."""
    out = []
    if any(r.lost_steps for r in rows):
        out.append(lost_work_text(rows))
    pruned = [r for r in rows if r.pruned]
    if not pruned:
        return out
    out += [
        f"{len(pruned)} trial(s) pruned by early stopping, ranked after the complete ones: their"
        f" {objective} is the last intermediate value reported before the cut, not a final one."
    ]
    found = saved(rows)
    if found is not None:
        out.append(found.text())
    return out


def to_csv(rows: Sequence[TrialRow], objective: str) -> str:
    """Full precision, every param and metric, one row per trial (for pandas/spreadsheets)."""
    params = param_names(rows)
    metrics = sorted({m for r in rows for m in r.metrics})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["rank", "trial_id", "status", objective, *params, *(f"metric.{m}" for m in metrics),
         "step", "pruned_at_step", "steps_run", "attempts", "preemptions", "app_errors",
         "lost_steps", "lost_seconds", "wall_seconds", "run_id", "error"]
    )  # fmt: skip
    for r in rows:
        writer.writerow(
            [r.rank or "", r.trial_id, r.status, "" if r.value is None else repr(r.value),
             *(r.params.get(p, "") for p in params), *(r.metrics.get(m, "") for m in metrics),
             r.step, "" if r.pruned_at is None else r.pruned_at,
             "" if r.steps_run is None else r.steps_run,
             r.attempts, r.preemptions, r.app_errors, r.lost_steps, r.lost_seconds,
             r.wall_seconds, r.run_id or "", r.error or ""]
        )  # fmt: skip
    return buf.getvalue()


def lost_work_text(rows: Sequence[TrialRow]) -> str:
    """``lost work: 120 steps, 14.2 s redone after preemptions (2 trials)``."""
    hit = [r for r in rows if r.lost_steps]
    return (
        f"lost work: {sum(r.lost_steps for r in hit)} steps, "
        f"{sum(r.lost_seconds for r in hit):.1f} s redone after preemptions ({len(hit)} trials)"
    )

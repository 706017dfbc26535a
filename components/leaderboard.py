"""A sweep's trials as a ranked leaderboard, read from the shared disk (pure: no MLflow, no plots).

``compare`` ranks with it and ``notify`` falls back on it when ``summary.json`` is missing (the
sweep failed before compare ran).
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

from components.contract import PLAN_FILE, RESULT_FILE, sweep_dir, trial_dir

DIRECTIONS = ("minimize", "maximize")
METRIC_COLUMNS = ("val_loss", "val_accuracy", "train_loss")


@dataclass
class TrialRow:
    """One trial of the plan, with what its ``result.json`` says (or why there is none)."""

    trial_id: str
    params: dict[str, Any]
    status: str = "failed"  # "done" | "failed"
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

    @property
    def done(self) -> bool:
        return self.status == "done"

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
        }


def load_plan(shared: Path, sweep_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``sweeps/<id>/plan.json`` as (trial id, params) pairs.

    Raises:
        ValueError: the plan is missing, not JSON, or not a list of ``{"id", "params"}``; the
            message names the file and the entry.
    """
    path = sweep_dir(shared, sweep_id) / PLAN_FILE
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
    """Every planned trial with its result; a trial without a usable result is failed, not dropped.

    A trial is done when its result says so and carries a number for ``objective`` (an empty
    ``objective``: the metric its result names).
    """
    rows = []
    for tid, params in load_plan(shared, sweep_id):
        row = TrialRow(trial_id=tid, params=params)
        path = trial_dir(shared, sweep_id, tid) / RESULT_FILE
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


def _fill(row: TrialRow, result: dict[str, Any], objective: str) -> None:
    metrics = result.get("metrics") or {}
    row.metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    row.run_id = result.get("run_id")
    row.step = int(result.get("step") or 0)
    row.attempts = int(result.get("attempts") or 0)
    row.preemptions = int(result.get("preemptions") or 0)
    row.app_errors = int(result.get("app_errors") or 0)
    row.wall_seconds = float(result.get("wall_seconds") or 0.0)
    row.data_hash = result.get("data_hash")
    row.params = result.get("params") or row.params
    row.error = result.get("error")
    obj = result.get("objective") or {}
    if not objective:  # no objective given (notify): the trial's own say is enough
        objective = str(obj.get("metric") or "")
    value = obj.get("value") if obj.get("metric") == objective else row.metrics.get(objective)
    if result.get("status") != "done":
        row.status = "failed"
        row.error = row.error or f"status {result.get('status')!r}"
    elif not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        row.status = "failed"
        row.error = f"objective {objective!r} missing or NaN in result.json"
    else:
        row.status = "done"
        row.value = float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rank(rows: Sequence[TrialRow], direction: str) -> list[TrialRow]:
    """Done trials best first (ties by trial id), then failed ones; sets ``rank`` (1 = best)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")
    sign = 1.0 if direction == "minimize" else -1.0
    done = sorted((r for r in rows if r.done), key=lambda r: (sign * (r.value or 0.0), r.trial_id))
    failed = sorted((r for r in rows if not r.done), key=lambda r: r.trial_id)
    for i, row in enumerate(done, start=1):
        row.rank = i
    for row in failed:
        row.rank = None
    return done + failed


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
    header = ["rank", "trial", *params, objective, *metrics, "step", "preemptions", "status"]
    cells = []
    for r in rows:
        status = r.status if r.done else f"failed: {r.error or 'unknown error'}"
        cells.append(
            [
                str(r.rank) if r.rank else "-",
                r.trial_id,
                *(fmt(r.params.get(p)) for p in params),
                fmt(r.value),
                *(fmt(r.metrics.get(m)) for m in metrics),
                str(r.step),
                str(r.preemptions),
                status,
            ]
        )
    return header, cells


def to_markdown(rows: Sequence[TrialRow], objective: str) -> str:
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
    return "\n".join(out) + "\n"


def to_csv(rows: Sequence[TrialRow], objective: str) -> str:
    """Full precision, every param and metric, one row per trial (for pandas/spreadsheets)."""
    params = param_names(rows)
    metrics = sorted({m for r in rows for m in r.metrics})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["rank", "trial_id", "status", objective, *params, *(f"metric.{m}" for m in metrics),
         "step", "attempts", "preemptions", "app_errors", "wall_seconds", "run_id", "error"]
    )  # fmt: skip
    for r in rows:
        writer.writerow(
            [r.rank or "", r.trial_id, r.status, "" if r.value is None else repr(r.value),
             *(r.params.get(p, "") for p in params), *(r.metrics.get(m, "") for m in metrics),
             r.step, r.attempts, r.preemptions, r.app_errors, r.wall_seconds, r.run_id or "", r.error or ""]
        )  # fmt: skip
    return buf.getvalue()


def final_report(shared: Path, sweep_id: str) -> str | None:
    """What ``make submit`` prints at the end: the leaderboard, the plots, the model.

    No MLflow link: a local run's loopback server has stopped by then (``make ui`` serves the runs
    and prints their URL). Pure file reading (for ``pipelines/``); None when compare has not
    summarised the sweep.
    """
    folder = sweep_dir(shared, sweep_id)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        board = (folder / "leaderboard.md").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    lines = [f"leaderboard of sweep {sweep_id} ({summary.get('status', '?')}):", board.rstrip("\n")]
    plots = summary.get("plots") or {}
    if plots:
        lines.append("plots: " + "  ".join(str(p) for p in plots.values()))
    model = summary.get("model")
    if model:
        lines.append(f"model: {model.get('uri')}")
    return "\n".join(lines) + "\n"

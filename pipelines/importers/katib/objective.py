"""``spec.objective``: the metric a trial is judged by, its direction, the metrics recorded beside
it, and how Katib ranks a trial's many values of it (``metricStrategies``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipelines.importers.katib.common import Context

METRIC = re.compile(r"^[A-Za-z0-9_./-]+$")


def objective(ctx: Context, obj: Any) -> tuple[dict[str, str], list[str]]:
    """``search.objective`` (``{metric, direction}``) and ``trainer.metrics`` (the objective's
    metric first)."""
    path = "spec.objective"
    if not isinstance(obj, Mapping):
        ctx.refuse(path, "required: what to optimise")
        return {"metric": "objective", "direction": "minimize"}, ["objective"]
    known = {"type", "goal", "objectiveMetricName", "additionalMetricNames", "metricStrategies"}
    for key in sorted(set(obj) - known):
        ctx.refuse(f"{path}.{key}", "not a field of a Katib objective")
    direction = obj.get("type")
    if direction not in ("minimize", "maximize"):
        ctx.refuse(f"{path}.type", f"must be minimize or maximize, got {direction!r}")
        direction = "minimize"
    metric = obj.get("objectiveMetricName")
    if not isinstance(metric, str) or not METRIC.match(metric):
        ctx.refuse(
            f"{path}.objectiveMetricName",
            f"a metric name must match {METRIC.pattern}, got {metric!r}",
        )
        metric = "objective"
    metrics = [metric]
    extra = obj.get("additionalMetricNames") or []
    if not isinstance(extra, list):
        ctx.refuse(f"{path}.additionalMetricNames", "must be a list of metric names")
        extra = []
    for i, name in enumerate(extra):
        if not isinstance(name, str) or not METRIC.match(name):
            ctx.refuse(
                f"{path}.additionalMetricNames[{i}]",
                f"a metric name must match {METRIC.pattern}, got {name!r}",
            )
        elif name not in metrics:
            metrics.append(name)
    if obj.get("goal") is not None:
        ctx.note(
            f"{path}.goal",
            f"{obj['goal']} dropped: sweepyard has no early finish on a goal, so the sweep runs "
            "all max_trials trials (Katib stops once a trial reaches it)",
        )
    _strategies(ctx, obj.get("metricStrategies"), metric, direction, metrics)
    return {"metric": metric, "direction": direction}, metrics


def _strategies(ctx: Context, raw: Any, metric: str, direction: str, metrics: list[str]) -> None:
    """Katib ranks a trial by its min, max or latest value (default: the best, min or max);
    sweepyard by the latest it reported."""
    path = "spec.objective.metricStrategies"
    best = "min" if direction == "minimize" else "max"
    chosen, where = best, f"{path} (Katib's default for {direction})"
    if raw is not None and not isinstance(raw, list):
        ctx.refuse(path, "must be a list of {name, value}")
        raw = []
    for i, s in enumerate(raw or []):
        value = s.get("value") if isinstance(s, Mapping) else None
        name = s.get("name") if isinstance(s, Mapping) else None
        if value not in ("min", "max", "latest"):
            ctx.refuse(f"{path}[{i}].value", f"must be min, max or latest, got {value!r}")
        elif name == metric:
            chosen, where = value, f"{path}[{i}]"
        elif name in metrics:
            ctx.note(f"{path}[{i}]", f"{value} dropped: every value of {name} is recorded")
        else:
            ctx.refuse(f"{path}[{i}].name", f"{name!r} is not a metric of the objective")
    if chosen == "latest":
        return
    if chosen == best:
        ctx.note(
            where,
            f"Katib ranks a trial by the {chosen} of its {metric} values; sweepyard by the last "
            "one it reports (the same when the program reports once, or improves to its end)",
        )
    else:
        ctx.refuse(  # only an explicit strategy can be the opposite of the direction
            f"{where}.value",
            f"ranking a {direction} objective by its {chosen} cannot map: sweepyard ranks by "
            "the last value (set it to latest)",
        )

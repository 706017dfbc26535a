"""What a sweep cost, what spot saved, and the work preemptions threw away (pure: stdlib only).

A trial's usage is read from its ``attempts.jsonl`` (:class:`components.runtime.trial.AttemptLog`
writes it): each attempt held its node from its ``start`` record to its ``end`` record; an attempt
killed with SIGKILL has no end and counts until its last record on file (a ``progress`` record's
``time``; else the ``redone_seconds`` it recorded, which it spent on the node; else nothing past
its start). Attempts killed before they wrote a start (``lost``) count as attempts and preemptions
but add no seconds: only what is on record is counted, never a guess. Lost work, preemptions and
attempts are :func:`components.attempts.read_attempts`'s counts, the same ones the leaderboard,
MLflow and the Slack digest show.

Usage is priced from what one trial pod requests (:class:`Resources`): GPU-hours at the GPU type's
hourly price plus vCPU-hours at the vCPU price (memory, disks and network are not priced), at
spot prices when the sweep ran on spot nodes, and again at on-demand prices for comparison.

The prices (:func:`default_prices`, from :mod:`components.prices`) are QUOTED, not measured: Google
Cloud's published list prices as recalled on the table's ``as_of`` date. They must be kept current;
every summary carries the table's date and source so a reader knows how old they are.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from components.attempts import read_attempts

KINDS = ("spot", "on_demand")


@dataclass(frozen=True)
class Prices:
    """Hourly prices: per GPU type {spot, on_demand}, and per vCPU-hour {spot, on_demand}."""

    gpu_hour: Mapping[str, Mapping[str, float]]  # {"nvidia-l4": {"spot": 0.22, "on_demand": 0.56}}
    cpu_hour: Mapping[str, float]  # {"spot": ..., "on_demand": ...}
    as_of: str  # "2026-12-01"
    source: str  # where the figures come from (URL or document name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prices:
        """A price table checked: an ISO ``as_of`` date, a ``source``, and for every GPU type and
        the vCPU a non-negative ``spot`` and ``on_demand`` price. Raises ValueError naming what
        is wrong."""
        as_of = str(data.get("as_of") or "")
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise ValueError(f"price table: as_of {as_of!r} is not a date (YYYY-MM-DD)") from None
        source = str(data.get("source") or "")
        if not source:
            raise ValueError("price table: source is missing (where do the figures come from?)")
        gpus = data.get("gpu_hour") or {}
        if not isinstance(gpus, Mapping):
            raise ValueError("price table: gpu_hour must map GPU types to {spot, on_demand}")
        gpu_hour = {
            str(gpu): _rates(f"gpu_hour[{gpu!r}]", rates) for gpu, rates in sorted(gpus.items())
        }
        return cls(
            gpu_hour=MappingProxyType(
                {gpu: MappingProxyType(rates) for gpu, rates in gpu_hour.items()}
            ),
            cpu_hour=MappingProxyType(_rates("cpu_hour", data.get("cpu_hour"))),
            as_of=as_of,
            source=source,
        )

    def rate(self, kind: str, gpu_type: str, gpu_count: int, cpus: float) -> float:
        """USD per hour of one pod with these requests, at ``kind`` ("spot" or "on_demand")."""
        gpu = 0.0
        if gpu_count:
            if gpu_type not in self.gpu_hour:
                known = ", ".join(sorted(self.gpu_hour)) or "none"
                raise ValueError(
                    f"no price for GPU type {gpu_type!r} in the price table of {self.as_of} "
                    f"(known types: {known})"
                )
            gpu = self.gpu_hour[gpu_type][kind] * gpu_count
        return gpu + self.cpu_hour[kind] * cpus


def _rates(where: str, rates: Any) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise ValueError(f"price table: {where} must be {{spot, on_demand}}")
    out: dict[str, float] = {}
    for kind in KINDS:
        value = rates.get(kind)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"price table: {where}.{kind} must be a price >= 0, not {value!r}")
        out[kind] = float(value)
    return out


def default_prices() -> Prices:
    """The dated table shipped in the repo (:mod:`components.prices`)."""
    from components.prices import TABLE

    return Prices.from_dict(TABLE)


@dataclass(frozen=True)
class Usage:
    """What a trial's attempts used, as ``attempts.jsonl`` records it."""

    node_seconds: float  # seconds its pods held their nodes (start -> end, or -> last record)
    lost_seconds: float  # seconds redone after preemptions (each attempt's latest redone_seconds)
    lost_steps: int
    preemptions: int  # as components.attempts.read_attempts counts them
    attempts: int


def trial_usage(attempts_jsonl: Path) -> Usage:
    """A trial's usage from its ``attempts.jsonl`` (no file: nothing used)."""
    history = read_attempts(attempts_jsonl)
    try:
        lines = attempts_jsonl.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    started: dict[str, float | None] = {}  # attempt id -> its start time (None: not on record)
    held: dict[str, float] = {}  # attempt id -> seconds it held its node, on record so far
    ended: set[str] = set()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line from a kill mid-append
        if not isinstance(rec, dict):
            continue
        aid = str(rec.get("id", ""))
        event = rec.get("event")
        at = _number(rec.get("time"))
        if event == "start":
            started[aid] = at
            held.setdefault(aid, 0.0)
        elif event == "progress" and aid not in ended:
            seconds = _number(rec.get("redone_seconds")) or 0.0  # spent on the node by then
            start = started.get(aid)
            if at is not None and start is not None:
                seconds = max(seconds, at - start)
            held[aid] = max(held.get(aid, 0.0), seconds)
        elif event == "end":
            ended.add(aid)
            start = started.get(aid)
            if at is not None and start is not None:
                seconds = at - start
            else:
                seconds = _number(rec.get("seconds")) or held.get(aid, 0.0)
            held[aid] = max(0.0, seconds)
    return Usage(
        node_seconds=round(sum(max(0.0, s) for s in held.values()), 3),
        lost_seconds=history.lost_seconds,
        lost_steps=history.lost_steps,
        preemptions=history.preemptions,
        attempts=history.attempts,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Resources:
    """What one trial pod requests, and on how many nodes (a multi-node trial: one pod each)."""

    gpu_type: str
    gpu_count: int
    cpus: float
    spot: bool
    nodes: int = 1


@dataclass(frozen=True)
class Cost:
    """One trial's usage priced (USD)."""

    cost: float  # what it cost as run (spot prices when spot, else on-demand)
    on_demand: float  # the same node-seconds at on-demand prices
    lost: float  # the lost seconds at the prices it ran at
    node_hours: float
    gpu_hours: float

    def to_dict(self) -> dict[str, float]:
        """Rounded: money to cents, hours to 4 decimals."""
        return {
            "cost": round(self.cost, 2),
            "on_demand": round(self.on_demand, 2),
            "lost": round(self.lost, 2),
            "node_hours": round(self.node_hours, 4),
            "gpu_hours": round(self.gpu_hours, 4),
        }


def price(usage: Usage, resources: Resources, prices: Prices) -> Cost:
    """GPU-hours x the GPU type's hourly price x count, plus vCPU-hours x the CPU price. An unknown
    GPU type raises ValueError naming it and the known types (the config check calls this)."""
    if resources.gpu_count < 0 or resources.cpus < 0:
        raise ValueError(
            f"resources cannot be negative (gpu_count={resources.gpu_count}, cpus={resources.cpus})"
        )
    on_demand_rate = prices.rate(
        "on_demand", resources.gpu_type, resources.gpu_count, resources.cpus
    )
    rate = (
        prices.rate("spot", resources.gpu_type, resources.gpu_count, resources.cpus)
        if resources.spot
        else on_demand_rate
    )
    node_hours = usage.node_seconds / 3600 * resources.nodes  # a gang holds all its nodes
    return Cost(
        cost=node_hours * rate,
        on_demand=node_hours * on_demand_rate,
        lost=usage.lost_seconds / 3600 * resources.nodes * rate,
        node_hours=node_hours,
        gpu_hours=node_hours * resources.gpu_count,
    )


def sweep_cost(trials: Mapping[str, Usage], resources: Resources, prices: Prices) -> dict[str, Any]:
    """{"cost", "on_demand", "spot_saved", "lost", "node_hours", "gpu_hours", "lost_steps",
    "currency": "USD", "spot", "prices_as_of", "prices_source", "trials": {trial_id: Cost.to_dict()}}

    Totals are summed before rounding (a hundred trials of a third of a cent cost 33 cents, not
    nothing); ``spot_saved`` is the rounded on-demand total less the rounded cost, so the figures a
    person reads add up (0 when the sweep did not run on spot).
    """
    costs = {trial_id: price(usage, resources, prices) for trial_id, usage in trials.items()}
    cost = round(sum(c.cost for c in costs.values()), 2)
    on_demand = round(sum(c.on_demand for c in costs.values()), 2)
    return {
        "cost": cost,
        "on_demand": on_demand,
        "spot_saved": round(on_demand - cost, 2) if resources.spot else 0.0,
        "lost": round(sum(c.lost for c in costs.values()), 2),
        "node_hours": round(sum(c.node_hours for c in costs.values()), 4),
        "gpu_hours": round(sum(c.gpu_hours for c in costs.values()), 4),
        "lost_steps": sum(usage.lost_steps for usage in trials.values()),
        "currency": "USD",
        "spot": resources.spot,
        "prices_as_of": prices.as_of,
        "prices_source": prices.source,
        "trials": {trial_id: c.to_dict() for trial_id, c in sorted(costs.items())},
    }


def cost_text(summary_cost: Mapping[str, Any]) -> str:
    """One line a person reads: ``cost $1.23 (on demand $3.45, spot saved $2.22); lost work $0.10
    (42 steps); prices of 2026-12-01``."""
    cost = float(summary_cost.get("cost") or 0.0)
    on_demand = float(summary_cost.get("on_demand") or 0.0)
    if summary_cost.get("spot", True):
        saved = float(summary_cost.get("spot_saved") or 0.0)
        text = f"cost {_usd(cost)} (on demand {_usd(on_demand)}, spot saved {_usd(saved)})"
    else:
        text = f"cost {_usd(cost)} (on demand, no spot)"
    steps = int(summary_cost.get("lost_steps") or 0)
    lost = float(summary_cost.get("lost") or 0.0)
    if steps or lost:
        text += f"; lost work {_usd(lost)} ({steps:,} step{'' if steps == 1 else 's'})"
    else:
        text += "; no work lost"
    as_of = summary_cost.get("prices_as_of")
    return text + (f"; prices of {as_of}" if as_of else "")


def _usd(amount: float) -> str:
    return f"-${-amount:,.2f}" if amount < 0 else f"${amount:,.2f}"

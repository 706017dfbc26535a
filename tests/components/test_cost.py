"""components.cost: node-seconds and lost work read from attempts.jsonl, priced from a dated table."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from components.attempts import read_attempts
from components.cost import (
    Cost,
    Prices,
    Resources,
    Usage,
    cost_text,
    default_prices,
    price,
    sweep_cost,
    trial_usage,
)
from components.runtime.trial import AttemptLog

T0 = 1_790_000_000.0  # an epoch second; every time below is T0 + seconds

# 1 GPU at $2/h spot, $6/h on demand; a vCPU at $0.01/h spot, $0.03/h on demand.
HAND = Prices.from_dict(
    {
        "as_of": "2026-12-01",
        "source": "hand-made for the tests",
        "gpu_hour": {"gpu-x": {"spot": 2.0, "on_demand": 6.0}},
        "cpu_hour": {"spot": 0.01, "on_demand": 0.03},
    }
)
GPU_SPOT = Resources(gpu_type="gpu-x", gpu_count=1, cpus=4, spot=True)


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def timeline(path: Path, progress_time: bool = True) -> Path:
    """Three attempts and one lost one, by hand (seconds after T0):

    a1   0 start · 1000 step 50 · 1400 preempted at step 55             holds 1400 s, redoes nothing
    a2   1500 start · 1700 step 20 · 1900 step 40 · SIGKILL (no end)     holds 400 s (to its last
         record), redoes steps 1..40 below a1's 55: 40 steps, 400 s
    --   an attempt killed before it wrote a start: a3 records it (lost: 1)
    a3   2000 start, restarts at step 1 · 2500 step 40 · 5600 done at step 100
         holds 3600 s, redoes steps 1..55: 55 steps, caught up at 2900: 900 s
    """

    def progress(aid: str, step: int, redone: int, seconds: float, t: float) -> dict[str, Any]:
        rec = {"event": "progress", "id": aid, "step": step, "first_step": 1}
        rec.update(redone_steps=redone, redone_seconds=seconds)
        return {**rec, "time": T0 + t} if progress_time else rec

    return write(
        path,
        [
            start("a1", 0),
            progress("a1", 50, 0, 0.0, 1000),
            end("a1", "preempted", 55, 0, 0.0, started=0, t=1400),
            start("a2", 1500),
            progress("a2", 20, 20, 200.0, 1700),
            progress("a2", 40, 40, 400.0, 1900),
            start("a3", 2000, lost=1),
            progress("a3", 40, 40, 500.0, 2500),
            end("a3", "done", 100, 55, 900.0, started=2000, t=5600),
        ],
    )


def start(aid: str, t: float, lost: int = 0) -> dict[str, Any]:
    return {"event": "start", "id": aid, "lost": lost, "time": T0 + t}


def end(
    aid: str, outcome: str, step: int, redone: int, seconds: float, started: float, t: float
) -> dict[str, Any]:
    rec = {"event": "end", "id": aid, "outcome": outcome, "step": step, "first_step": 1}
    rec.update(redone_steps=redone, redone_seconds=seconds, time=T0 + t, seconds=t - started)
    return rec


EXPECTED = Usage(node_seconds=5400.0, lost_seconds=1300.0, lost_steps=95, preemptions=3, attempts=4)


def test_trial_usage_by_hand(tmp_path: Path) -> None:
    usage = trial_usage(timeline(tmp_path / "attempts.jsonl"))
    # 1400 + 400 + 3600 node-seconds; 400 + 900 s and 40 + 55 steps redone; preempted a1, lost
    # attempt, SIGKILLed a2; three starts plus the lost one
    assert usage == EXPECTED
    history = read_attempts(tmp_path / "attempts.jsonl")  # the counts everything else shows
    assert (usage.preemptions, usage.attempts, usage.lost_steps) == (
        history.preemptions,
        history.attempts,
        history.lost_steps,
    )


def test_a_killed_attempt_counts_only_what_is_on_record(tmp_path: Path) -> None:
    # progress records as AttemptLog writes them today carry no time: a2 held its node at least
    # the 400 s it recorded redoing, and no guess past that
    assert trial_usage(timeline(tmp_path / "a.jsonl", progress_time=False)) == EXPECTED
    # a start alone adds nothing; an attempt that never wrote a start adds nothing
    only_start = write(tmp_path / "b.jsonl", [start("k", 0, lost=2)])
    assert trial_usage(only_start) == Usage(0.0, 0.0, 0, 3, 3)
    # a progress record past its redone seconds, then a torn last line from the kill
    path = write(
        tmp_path / "c.jsonl",
        [
            start("k", 0),
            {"event": "progress", "id": "k", "step": 9, "redone_steps": 0, "time": T0 + 42.5},
        ],
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"event": "progress", "id": "k", "time": ')
    assert trial_usage(path).node_seconds == 42.5
    assert trial_usage(tmp_path / "missing.jsonl") == Usage(0.0, 0.0, 0, 0, 0)


def test_trial_usage_reads_what_attempt_log_writes(tmp_path: Path) -> None:
    path = tmp_path / "attempts.jsonl"
    first = AttemptLog(path, env={})
    first.start()
    first.progress(5)
    first.end("preempted", 143, step=5)
    second = AttemptLog(path, env={})
    second.start()
    second.progress(3)  # redoes steps 3..5
    second.progress(5)
    second.progress(8)
    second.end("done", 0, step=8)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ends = [r for r in records if r["event"] == "end"]
    usage = trial_usage(path)
    assert usage.node_seconds == pytest.approx(sum(r["seconds"] for r in ends), abs=0.01)
    assert (usage.attempts, usage.preemptions, usage.lost_steps) == (2, 1, 3)


def test_price_by_hand(tmp_path: Path) -> None:
    usage = trial_usage(timeline(tmp_path / "attempts.jsonl"))
    cost = price(usage, GPU_SPOT, HAND)
    # 1.5 node-hours x ($2 + 4 x $0.01) spot, x ($6 + 4 x $0.03) on demand
    assert cost.cost == pytest.approx(3.06)
    assert cost.on_demand == pytest.approx(9.18)
    # 1300 s = 0.36111 h x $2.04
    assert cost.lost == pytest.approx(1300 / 3600 * 2.04)
    assert cost.to_dict() == {
        "cost": 3.06,
        "on_demand": 9.18,
        "lost": 0.74,
        "node_hours": 1.5,
        "gpu_hours": 1.5,
    }
    two = price(usage, Resources("gpu-x", 2, 8, spot=False), HAND)
    assert two.to_dict() == {
        "cost": 18.36,  # 1.5 h x (2 x $6 + 8 x $0.03), on demand
        "on_demand": 18.36,
        "lost": 4.42,  # 0.36111 h x $12.24
        "node_hours": 1.5,
        "gpu_hours": 3.0,
    }
    # a trial on 2 nodes (a JobSet) holds both for as long: twice the node- and GPU-hours
    gang = price(usage, Resources("gpu-x", 2, 8, spot=False, nodes=2), HAND)
    assert gang.to_dict() == {
        "cost": 36.72,
        "on_demand": 36.72,
        "lost": 8.84,
        "node_hours": 3.0,
        "gpu_hours": 6.0,
    }


def test_cpu_only_prices_only_the_cpus() -> None:
    usage = Usage(node_seconds=7200, lost_seconds=0, lost_steps=0, preemptions=0, attempts=1)
    # gpu_count 0: the GPU type is not looked up at all
    cost = price(usage, Resources("no-such-gpu", 0, 2, spot=True), HAND)
    assert cost == Cost(cost=0.04, on_demand=0.12, lost=0.0, node_hours=2.0, gpu_hours=0.0)


def test_unknown_gpu_type_names_it_and_the_known_ones() -> None:
    usage = Usage(3600, 0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"'nvidia-tesla-k9'.*known types: gpu-x"):
        price(usage, Resources("nvidia-tesla-k9", 1, 4, spot=True), HAND)
    with pytest.raises(ValueError, match="nvidia-tesla-k9") as raised:
        price(usage, Resources("nvidia-tesla-k9", 1, 4, spot=True), default_prices())
    assert "nvidia-l4" in str(raised.value)


def test_sweep_cost_totals_the_trials() -> None:
    trials = {
        "t2": Usage(5400, 1300, 95, 3, 4),
        "t1": Usage(1000, 0, 0, 0, 1),
        "t3": Usage(17, 5, 2, 1, 2),
    }
    summary = sweep_cost(trials, GPU_SPOT, HAND)
    rows = summary["trials"]
    assert list(rows) == ["t1", "t2", "t3"]
    for key in ("cost", "on_demand", "lost"):
        exact = sum(price(u, GPU_SPOT, HAND).to_dict()[key] for u in trials.values())
        assert summary[key] == pytest.approx(exact, abs=0.005 * len(trials))
    assert summary["cost"] == round(6417 / 3600 * 2.04, 2) == 3.64
    assert summary["on_demand"] == round(6417 / 3600 * 6.12, 2) == 10.91
    assert summary["lost"] == round(1305 / 3600 * 2.04, 2) == 0.74
    assert summary["spot_saved"] == pytest.approx(summary["on_demand"] - summary["cost"])
    assert summary["spot_saved"] == 7.27
    assert summary["node_hours"] == summary["gpu_hours"] == round(6417 / 3600, 4)
    assert summary["lost_steps"] == 97
    assert summary["currency"] == "USD"
    assert summary["prices_as_of"] == "2026-12-01"
    assert summary["prices_source"] == "hand-made for the tests"
    json.dumps(summary)  # goes into summary.json and MLflow as is

    # a hundred trials of a third of a cent each cost 33 cents, not nothing
    tiny = {f"t{i}": Usage(6, 0, 0, 0, 1) for i in range(100)}
    assert sweep_cost(tiny, GPU_SPOT, HAND)["cost"] == round(600 / 3600 * 2.04, 2) == 0.34


def test_a_sweep_not_on_spot_saved_nothing() -> None:
    trials = {"t1": Usage(3600, 360, 10, 1, 2)}
    summary = sweep_cost(trials, Resources("gpu-x", 1, 4, spot=False), HAND)
    assert summary["cost"] == summary["on_demand"] == 6.12
    assert summary["spot_saved"] == 0
    assert summary["lost"] == 0.61
    assert cost_text(summary) == (
        "cost $6.12 (on demand, no spot); lost work $0.61 (10 steps); prices of 2026-12-01"
    )


def test_cost_text() -> None:
    summary = sweep_cost({"t": Usage(5400, 1300, 95, 3, 4)}, GPU_SPOT, HAND)
    assert cost_text(summary) == (
        "cost $3.06 (on demand $9.18, spot saved $6.12); lost work $0.74 (95 steps); "
        "prices of 2026-12-01"
    )
    assert cost_text(
        {"cost": 1234.5, "on_demand": 3000, "spot_saved": 1765.5, "lost": 0.1, "lost_steps": 1}
    ) == ("cost $1,234.50 (on demand $3,000.00, spot saved $1,765.50); lost work $0.10 (1 step)")
    assert cost_text(sweep_cost({}, GPU_SPOT, HAND)) == (
        "cost $0.00 (on demand $0.00, spot saved $0.00); no work lost; prices of 2026-12-01"
    )


def test_default_prices() -> None:
    prices = default_prices()
    date.fromisoformat(prices.as_of)
    assert "verify before billing" in prices.source
    for gpu in (
        "nvidia-l4",
        "nvidia-tesla-t4",
        "nvidia-tesla-a100",
        "nvidia-a100-80gb",
        "nvidia-h100-80gb",
    ):
        assert gpu in prices.gpu_hour
    for gpu, rates in prices.gpu_hour.items():
        assert 0 < rates["spot"] < rates["on_demand"], gpu
    assert 0 < prices.cpu_hour["spot"] < prices.cpu_hour["on_demand"]
    with pytest.raises(TypeError):
        prices.gpu_hour["nvidia-l4"]["spot"] = 0.0  # type: ignore[index]


def test_every_gpu_type_the_project_names_has_a_price() -> None:
    root = Path(__file__).resolve().parents[2]
    texts = [root / "README.md", *sorted((root / "pipelines").glob("*.yaml"))]
    named = {
        word.strip("`'\",.:;()[]{}")
        for path in texts
        if path.exists()
        for word in path.read_text(encoding="utf-8").split()
        if word.strip("`'\",.:;()[]{}").startswith("nvidia-")
    }
    named.discard("nvidia-")
    assert named - set(default_prices().gpu_hour) == set()


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"as_of": "December 2026"}, "not a date"),
        ({"source": ""}, "source"),
        ({"gpu_hour": {"g": {"spot": 1.0}}}, r"gpu_hour\['g'\].on_demand"),
        ({"gpu_hour": {"g": {"spot": -1, "on_demand": 2}}}, r"gpu_hour\['g'\].spot"),
        ({"cpu_hour": {"spot": "0.01", "on_demand": 0.03}}, "cpu_hour.spot"),
    ],
)
def test_a_bad_price_table_is_refused(table: dict[str, Any], problem: str) -> None:
    good: dict[str, Any] = {
        "as_of": "2026-12-01",
        "source": "s",
        "gpu_hour": {"g": {"spot": 1.0, "on_demand": 2.0}},
        "cpu_hour": {"spot": 0.01, "on_demand": 0.03},
    }
    with pytest.raises(ValueError, match=problem):
        Prices.from_dict({**good, **table})

"""The benchmarks' gate: what passes, what fails, what the machine's noise leaves unresolved."""

from __future__ import annotations

import pytest

from benchmarks._measure import Comparison, Gate, bracket, rotate


def test_rotate_runs_each_arm_first_in_turn() -> None:
    order: list[str] = []

    def arm(name: str):  # type: ignore[no-untyped-def]
        return lambda: order.append(name) or 1.0

    results = rotate([arm("a"), arm("b"), arm("c")], repeats=3)
    assert order == list("abcbcacab")
    assert results == [[1.0] * 3] * 3


def test_bracket_runs_the_baseline_on_both_sides_of_every_candidate_and_cancels_a_drift() -> None:
    order: list[str] = []
    clock = iter(range(100))

    def arm(name: str, cost: float):  # type: ignore[no-untyped-def]
        def run() -> float:  # the machine slows by 1 % a run: a linear drift
            order.append(name)
            return cost * (1 + 0.01 * next(clock))

        return run

    (b_h, h), (b_c, c) = bracket(arm("b", 1.0), [arm("h", 1.05), arm("c", 1.0)], rounds=2)
    assert "".join(order) == "bhbcbcbhb"
    assert len(h) == len(b_h) == len(c) == len(b_c) == 2
    assert [round(x / b, 6) for b, x in zip(b_h, h, strict=True)] == [1.05, 1.05]
    assert [round(x / b, 6) for b, x in zip(b_c, c, strict=True)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bracket(arm("b", 1.0), [arm("h", 1.0)], rounds=0)


def test_a_miss_fails_the_run_and_a_met_target_passes(capsys: pytest.CaptureFixture[str]) -> None:
    gate = Gate("bench_x")
    gate.at_most(Comparison("slow / fast", [1.0, 1.0, 1.0], [1.10, 1.12, 1.08]), 1.03)
    assert gate.finish() == 1
    assert "MISSED slow / fast: ratio 1.1000" in capsys.readouterr().out
    gate = Gate("bench_x")
    gate.at_most(Comparison("slow / fast", [1.0, 1.0, 1.0], [1.01, 1.02, 1.0]), 1.03)
    assert gate.finish() == 0


def test_with_an_a_a_control_only_a_result_clear_of_the_noise_is_met_or_missed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    noisy = Comparison("A/A", [1.0, 1.0, 1.0], [1.06, 0.93, 1.05])  # 5-7 % apart on its own
    quiet = Comparison("A/A", [1.0, 1.0, 1.0], [1.005, 0.995, 1.0])
    over = Comparison("h / b", [1.0, 1.0, 1.0], [1.05, 1.04, 1.06])
    under = Comparison("h / b", [1.0, 1.0, 1.0], [0.99, 1.0, 1.01])

    def verdict(cmp: Comparison, control: Comparison) -> tuple[int, str]:
        gate = Gate("bench_x")
        gate.at_most(cmp, 1.03, control=control)
        return gate.finish(), capsys.readouterr().out

    status, out = verdict(over, noisy)
    assert status == 0 and "UNRESOLVED h / b: ratio 1.0500" in out
    assert "0 of 1 targets met, 1 unresolved" in out
    status, out = verdict(under, noisy)  # 1.00 looks met, but the noise reaches past 1.03
    assert status == 0 and "UNRESOLVED h / b: ratio 1.0000" in out
    status, out = verdict(over, quiet)
    assert status == 1 and "MISSED h / b" in out
    status, out = verdict(under, quiet)
    assert status == 0 and "ok     h / b" in out and "1 of 1 targets met" in out


def test_a_known_miss_is_excused_only_within_its_bound_and_only_in_its_benchmark(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks._measure import KNOWN_MISSES, KnownMiss

    (bench, label), known = next(iter(KNOWN_MISSES.items()))
    assert isinstance(known, KnownMiss) and known.bound > 1.03

    def ratio(name: str, value: float) -> tuple[int, str]:
        gate = Gate(name)
        gate.at_most(Comparison(label, [1.0, 1.0, 1.0], [value] * 3), 1.03)
        return gate.finish(), capsys.readouterr().out

    within = (1.03 + known.bound) / 2
    status, out = ratio(bench, within)
    assert status == 0 and known.reason in out and f"gated at <= {known.bound:g}" in out
    assert "0 of 1 targets met, 1 known miss(es) within their bounds" in out
    status, out = ratio(bench, known.bound + 0.05)  # a regression past what the machine reaches
    assert status == 1 and "past the known miss's bound" in out
    status, out = ratio("bench_other", within)  # the same label elsewhere is an ordinary miss
    assert status == 1 and known.reason not in out


def test_a_known_speed_up_miss_fails_below_its_bound(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks._measure import KNOWN_MISSES

    (bench, label), known = next((k, v) for k, v in KNOWN_MISSES.items() if "parallel" in k[1])

    def speedup(x: float) -> int:
        gate = Gate(bench)
        gate.at_least(Comparison(label, [x] * 3, [1.0] * 3), 4.0)
        return gate.finish()

    assert speedup(known.bound + 0.2) == 0
    assert speedup(known.bound - 0.2) == 1
    assert speedup(4.5) == 0 and "(met; listed in KNOWN_MISSES)" in capsys.readouterr().out


def test_a_noisy_known_miss_is_held_to_its_bound_less_the_noise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks._measure import KNOWN_MISSES

    (bench, label), known = next((k, v) for k, v in KNOWN_MISSES.items() if "harness" in k[1])
    control = Comparison("A/A", [1.0, 1.0, 1.0], [1.05, 1.05, 1.05])  # 5 % apart on its own

    def harness(value: float) -> int:
        gate = Gate(bench)
        gate.at_most(Comparison(label, [1.0] * 3, [value] * 3), 1.03, control=control)
        return gate.finish()

    assert harness(known.bound + 0.04) == 0  # 0.04 over, but the noise is 0.05
    assert harness(known.bound + 0.06) == 1
    assert "MISSED" in capsys.readouterr().out


def test_a_candidate_s_own_spread_counts_as_noise_even_when_the_control_was_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quiet = Comparison("A/A", [1.0] * 5, [1.0, 1.002, 0.998, 1.001, 0.999])
    cmp = Comparison("h / b", [1.0] * 5, [0.96, 1.02, 1.05, 1.08, 1.15])  # median 1.05, wide

    assert cmp.median_interval() == (0.96, 1.15)  # 5 repetitions: the extremes (94 %)
    nine = Comparison("x", [1.0] * 9, [float(v) for v in range(1, 10)])
    assert nine.median_interval() == (2.0, 8.0)  # 9: the second lowest and highest (96 %)

    gate = Gate("bench_x")
    gate.at_most(cmp, 1.03, control=quiet)
    assert gate.finish() == 0  # 1.05 looks missed, but its own repetitions reach down to 0.96
    out = capsys.readouterr().out
    assert (
        "UNRESOLVED h / b: ratio 1.0500" in out
        and "interval of the median ratio, 0.9600-1.1500" in out
    )

    tight = Comparison("h / b", [1.0] * 5, [1.04, 1.045, 1.05, 1.055, 1.06])
    gate = Gate("bench_x")
    gate.at_most(tight, 1.03, control=quiet)
    assert gate.finish() == 1  # the same median with a tight spread is a clear miss

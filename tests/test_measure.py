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


def test_a_cost_is_gated_on_the_upper_end_of_its_median_s_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks._measure import median_bounds, upper_median

    assert median_bounds([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # 5: the extremes (94 %)
    assert median_bounds([float(v) for v in range(1, 10)]) == (2.0, 8.0)  # 9: one in from each end
    assert upper_median([0.1] * 8 + [9.0]) == 0.1  # one outlier among 9 does not decide it
    with pytest.raises(ValueError, match="no values"):
        median_bounds([])

    def cost(values: list[float]) -> tuple[int, str]:
        gate = Gate("bench_x")
        gate.cost_at_most("cpu per step", values, 0.3e-3, scale=1e6, unit=" us",
                          meaning=lambda v: f"{100 * v / 0.03:.2f} % of a 30 ms step")  # fmt: skip
        return gate.finish(), capsys.readouterr().out

    status, out = cost([0.20e-3, 0.21e-3, 0.22e-3, 0.25e-3, 0.29e-3])
    assert status == 0 and "ok     cpu per step: 290 us" in out and "0.97 % of a 30 ms step" in out
    assert "median 220 us" in out and "target <= 300 us (1.00 % of a 30 ms step)" in out
    status, out = cost([0.20e-3, 0.21e-3, 0.22e-3, 0.25e-3, 0.31e-3])  # met in 4 of 5: not met
    assert status == 1 and "MISSED cpu per step: 310 us" in out


def test_every_miss_fails_none_is_excused(capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks._measure as measure

    assert not hasattr(measure, "KNOWN_MISSES")
    gate = Gate("bench_harness")
    gate.at_least(Comparison("[loopback] parallel vs sequential", [1.8] * 3, [1.0] * 3), 4.0)
    gate.check(True, "counts")
    assert gate.finish() == 1
    out = capsys.readouterr().out
    assert "MISSED [loopback] parallel vs sequential: speed-up 1.800x" in out


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

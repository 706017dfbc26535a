"""The benchmarks' gate: what passes, what fails, what the machine's noise leaves unresolved."""

from __future__ import annotations

import pytest

from benchmarks._measure import Comparison, Gate, rotate


def test_rotate_runs_each_arm_first_in_turn() -> None:
    order: list[str] = []

    def arm(name: str):  # type: ignore[no-untyped-def]
        return lambda: order.append(name) or 1.0

    results = rotate([arm("a"), arm("b"), arm("c")], repeats=3)
    assert order == list("abcbcacab")
    assert results == [[1.0] * 3] * 3


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


def test_a_listed_known_miss_prints_its_reason_and_does_not_fail(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks._measure import KNOWN_MISSES

    key = next(iter(KNOWN_MISSES))
    gate = Gate("bench_x")
    gate.at_most(Comparison(key, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]), 1.03)
    assert gate.finish() == 0
    out = capsys.readouterr().out
    assert f"MISSED {key}: ratio 2.0000" in out and KNOWN_MISSES[key] in out
    assert "0 of 1 targets met, 1 known miss(es)" in out

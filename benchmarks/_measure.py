"""What every benchmark shares: alternated repetitions, spreads, a conservative gate, the exit status.

A benchmark measures a *baseline* and a *candidate* in the same process tree, alternating which one
runs first in each repetition (so neither always finds the caches warm or the machine quiet), and
compares them with :class:`Comparison`. The gate uses the unfavourable one of two medians: the
median of the per-repetition ratios and the ratio of the two medians. One lucky repetition cannot
pass a target, and neither can a mean that averages a miss with a hit.

    base, cand = alternate(run_baseline, run_candidate, repeats=5)
    cmp = Comparison("harness / bare", base, cand, unit="s")
    gate = Gate("bench_harness")
    gate.at_most(cmp, 1.03)           # or gate.at_least(...) for a speed-up, gate.check(...)
    sys.exit(gate.finish())           # prints every spread, then each ratio and verdict, last

Where wall time cannot resolve a target on 2 shared cores, a benchmark measures what can be
resolved (CPU seconds of the harness's threads, requests, bytes, round trips) once per repetition
and gates it with :meth:`Gate.cost_at_most` (the upper end of the median's 90 % interval) or
:meth:`Gate.check`. No target is excused: every miss fails the run.

Where the machine's speed drifts within a run, :func:`bracket` runs the baseline before and after
every candidate run instead, and compares each with the mean of the two around it.

Each timed callable returns the seconds it measured itself (so set-up stays outside the timing).
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

Timed = Callable[[], float]


def rotate(timed: Sequence[Timed], repeats: int) -> list[list[float]]:
    """Run each callable ``repeats`` times, the order rotating by one place each repetition (with
    two, the baseline runs first in even repetitions and the candidate in odd ones)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    results: list[list[float]] = [[] for _ in timed]
    for i in range(repeats):
        for k in range(len(timed)):
            j = (k + i) % len(timed)
            gc.collect()  # no collector pause left over from the one before
            results[j].append(timed[j]())
    return results


def alternate(baseline: Timed, candidate: Timed, repeats: int) -> tuple[list[float], list[float]]:
    """Run both ``repeats`` times, baseline first in even repetitions and candidate first in odd."""
    base, cand = rotate([baseline, candidate], repeats)
    return base, cand


def bracket(
    baseline: Timed, candidates: Sequence[Timed], rounds: int
) -> list[tuple[list[float], list[float]]]:
    """Run ``baseline`` before and after every candidate run: ``B c1 B c2 B`` in the first round,
    ``B c2 B c1 B`` in the next (the candidates' order rotating each round), one baseline run
    shared between neighbours.

    For each candidate, returns ``(brackets, times)``: its times and, beside each, the mean of the
    baseline runs just before and just after it. A drift of the machine's speed that is linear over
    three runs cancels out of ``time / bracket``, and every candidate has a baseline run on either
    side, so neither always runs first.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    gc.collect()
    before = baseline()
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in candidates]
    for i in range(rounds):
        for k in range(len(candidates)):
            j = (k + i) % len(candidates)
            gc.collect()  # no collector pause left over from the one before
            took = candidates[j]()
            gc.collect()
            after = baseline()
            out[j][0].append((before + after) / 2)
            out[j][1].append(took)
            before = after
    return out


def spread(values: Sequence[float], scale: float = 1.0, unit: str = "") -> str:
    """``median M (min a, IQR q1-q3, max b, n=N)`` of ``values`` times ``scale``."""
    v = sorted(x * scale for x in values)
    if len(v) >= 4:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
        iqr = f", IQR {q1:.4g}-{q3:.4g}"
    else:
        iqr = ""
    return f"median {statistics.median(v):.4g}{unit} (min {v[0]:.4g}{iqr}, max {v[-1]:.4g}, n={len(v)})"


@dataclass
class Comparison:
    """Paired measurements of a baseline and a candidate (``candidate[i]`` ran beside ``baseline[i]``).

    ``ratio`` is candidate / baseline (a time ratio: lower is better; for a speed-up, baseline /
    candidate is :attr:`speedup`).
    """

    label: str
    baseline: Sequence[float]
    candidate: Sequence[float]
    unit: str = "s"
    scale: float = 1.0
    names: tuple[str, str] = ("baseline", "candidate")

    def __post_init__(self) -> None:
        if len(self.baseline) != len(self.candidate) or not self.baseline:
            raise ValueError(
                f"{self.label}: need pairs, got {len(self.baseline)} and {len(self.candidate)}"
            )

    @property
    def pair_ratios(self) -> list[float]:
        return [c / b for b, c in zip(self.baseline, self.candidate, strict=True)]

    @property
    def ratio_of_medians(self) -> float:
        return statistics.median(self.candidate) / statistics.median(self.baseline)

    def worst_ratio(self) -> float:
        """candidate / baseline, the larger of the two medians (for a lower-is-better target)."""
        return max(statistics.median(self.pair_ratios), self.ratio_of_medians)

    def worst_speedup(self) -> float:
        """baseline / candidate, the smaller of the two medians (for a higher-is-better target)."""
        return min(statistics.median(1 / r for r in self.pair_ratios), 1 / self.ratio_of_medians)

    def median_interval(self, confidence: float = 0.9) -> tuple[float, float]:
        """A distribution-free interval for the median per-repetition ratio: the order statistics
        ``(r[k], r[n-1-k])`` with the largest ``k`` that still covers the median with probability
        ``confidence`` (a binomial bound; with 5 or 7 repetitions, the lowest and highest ratio,
        94 % and 98 %; with too few for ``confidence``, the lowest and highest all the same)."""
        return median_bounds(self.pair_ratios, confidence)

    def deviation(self) -> float:
        """How far an A/A control (the baseline against itself) lands from 1: the larger of the
        two medians' distances. Any comparison in the same run is that unsure."""
        return max(abs(statistics.median(self.pair_ratios) - 1), abs(self.ratio_of_medians - 1))

    def describe(self) -> list[str]:
        b, c = self.names
        return [
            f"{self.label}: {b} {spread(self.baseline, self.scale, self.unit)}",
            f"{self.label}: {c} {spread(self.candidate, self.scale, self.unit)}",
            f"{self.label}: per-repetition {c}/{b} {spread(self.pair_ratios)}",
        ]


def median_bounds(values: Sequence[float], confidence: float = 0.9) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order statistics
    ``(v[k], v[n-1-k])`` with the largest ``k`` that still covers the median with probability
    ``confidence`` (up to 7 values, the lowest and the highest; 8 to 10, the second lowest and highest)."""
    v = sorted(values)
    n = len(v)
    if not n:
        raise ValueError("no values")
    k = 0
    while k + 1 < n - 1 - (k + 1) and _coverage(n, k + 1) >= confidence:
        k += 1
    return v[k], v[n - 1 - k]


def upper_median(values: Sequence[float], confidence: float = 0.9) -> float:
    """The upper end of :func:`median_bounds`: a conservative figure for a lower-is-better cost."""
    return median_bounds(values, confidence)[1]


def _coverage(n: int, k: int) -> float:
    """P(r[k] <= median <= r[n-1-k]) for ``n`` independent draws (0-based order statistics)."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n


class Verdict(NamedTuple):
    """One target's outcome: ``state`` is ok, MISSED or UNRESOLVED; ``label`` the comparison's."""

    state: str
    message: str
    label: str = ""


@dataclass
class Gate:
    """Collects spreads and verdicts; :meth:`finish` prints them (verdicts last) and gives the exit status."""

    name: str
    lines: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.lines.append(line)

    def check(self, ok: bool, message: str) -> bool:
        """Record a verdict that is not a ratio (e.g. every point delivered)."""
        self.verdicts.append(Verdict("ok" if ok else "MISSED", message))
        return ok

    def at_most(
        self, cmp: Comparison, target: float, what: str = "ratio", control: Comparison | None = None
    ) -> bool:
        """Gate ``candidate / baseline <= target`` on :meth:`Comparison.worst_ratio`.

        With ``control`` (the baseline measured against itself in the same repetitions), the value
        is only as sure as the run's noise, on each side the larger of the control's
        :meth:`~Comparison.deviation` from 1 and how far the candidate's own
        :meth:`~Comparison.median_interval` reaches from its median (one control can be lucky
        where the candidate was not). It is met when it is within the target by more than the
        noise above it, missed (failing) when it is beyond the target by more than the noise below
        it, and UNRESOLVED in between: printed with the noise, never counted as met, and not
        failing, since this machine cannot tell it from the target in this run.
        """
        self.lines.extend(cmp.describe())
        value = cmp.worst_ratio()
        message = (
            f"{cmp.label}: {what} {value:.4f} (worse of median pair ratio "
            f"{statistics.median(cmp.pair_ratios):.4f} and ratio of medians "
            f"{cmp.ratio_of_medians:.4f}), target <= {target:g}"
        )
        if control is None:
            return self._record(value <= target, message, cmp.label)
        self.lines.extend(control.describe())
        aa = control.deviation()
        median = statistics.median(cmp.pair_ratios)
        lo, hi = cmp.median_interval()
        below, above = max(aa, median - lo), max(aa, hi - median)
        message += (
            f", -{below:.4f}/+{above:.4f} (the larger of {control.label}'s distance from 1, "
            f"{aa:.4f}, and the 90 % interval of the median ratio, {lo:.4f}-{hi:.4f})"
        )
        if value + above <= target or value - below > target:
            return self._record(value + above <= target, message, cmp.label)
        message += ": the target lies within the noise"
        self.verdicts.append(Verdict("UNRESOLVED", message, cmp.label))
        return False

    def paired_at_most(self, cmp: Comparison, target: float, what: str = "ratio") -> bool:
        """Gate the median of the per-pair ratios ``<= target``, for pairs that share a condition
        no other pair has (a search's seed: one landscape each). Comparing medians taken across
        pairs would set one seed's result against another seed's; both are printed."""
        self.lines.extend(cmp.describe())
        value = statistics.median(cmp.pair_ratios)
        message = (
            f"{cmp.label}: {what} {value:.4f} (median of the per-seed ratios; ratio of medians "
            f"across seeds {cmp.ratio_of_medians:.4f}), target <= {target:g}"
        )
        return self._record(value <= target, message, cmp.label)

    def at_least(self, cmp: Comparison, target: float, what: str = "speed-up") -> bool:
        """Gate ``baseline / candidate >= target`` on :meth:`Comparison.worst_speedup`."""
        self.lines.extend(cmp.describe())
        value = cmp.worst_speedup()
        message = (
            f"{cmp.label}: {what} {value:.3f}x (worse of median pair speed-up "
            f"{statistics.median(1 / r for r in cmp.pair_ratios):.3f}x and ratio of medians "
            f"{1 / cmp.ratio_of_medians:.3f}x), target >= {target:g}x"
        )
        return self._record(value >= target, message, cmp.label)

    def cost_at_most(
        self,
        label: str,
        values: Sequence[float],
        target: float,
        *,
        scale: float = 1.0,
        unit: str = "",
        meaning: Callable[[float], str] | None = None,
    ) -> bool:
        """Gate a cost measured once per repetition (CPU seconds per step, say) ``<= target`` on
        :func:`upper_median`: the upper end of the 90 % distribution-free interval of its median
        (up to 7 repetitions, the largest; 8 to 10, the second largest). A cost that is met only in
        most repetitions is not met; one slow outlier among 9 does not fail it. ``meaning`` says
        what a value costs in the target's terms (e.g. a share of a GPU step)."""
        self.lines.append(f"{label}: {spread(values, scale, unit)}")
        value = upper_median(values)
        message = (
            f"{label}: {value * scale:.4g}{unit} (upper end of the 90 % interval of the median "
            f"{statistics.median(values) * scale:.4g}{unit}, n={len(values)})"
            + (f" = {meaning(value)}" if meaning else "")
            + f", target <= {target * scale:.4g}{unit}"
            + (f" ({meaning(target)})" if meaning else "")
        )
        return self._record(value <= target, message, label)

    def _record(self, ok: bool, message: str, label: str) -> bool:
        self.verdicts.append(Verdict("ok" if ok else "MISSED", message, label))
        return ok

    def finish(self) -> int:
        """Print the spreads, then every verdict (the ratios last); 1 when a target is missed.

        UNRESOLVED verdicts (a target inside the run's noise: its A/A control and its spread)
        print with that noise and do not fail the run; they are not counted as met either. No
        target is excused: every miss fails.
        """
        for line in self.lines:
            print(line)
        counts = {"ok": 0, "MISSED": 0, "UNRESOLVED": 0}
        for v in self.verdicts:
            print(f"{v.state:<6} {v.message}")
            counts[v.state] += 1
        if counts["MISSED"]:
            print(f"{self.name}: {counts['MISSED']} target(s) missed", file=sys.stderr)
            return 1
        print(
            f"{self.name}: {counts['ok']} of {len(self.verdicts)} targets met"
            + (
                f", {counts['UNRESOLVED']} unresolved within the noise"
                if counts["UNRESOLVED"]
                else ""
            )
        )
        return 0

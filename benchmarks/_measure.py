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
        r = sorted(self.pair_ratios)
        n = len(r)
        k = 0
        while k + 1 < n - 1 - (k + 1) and _coverage(n, k + 1) >= confidence:
            k += 1
        return r[k], r[n - 1 - k]

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


def _coverage(n: int, k: int) -> float:
    """P(r[k] <= median <= r[n-1-k]) for ``n`` independent draws (0-based order statistics)."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n


class Verdict(NamedTuple):
    """One target's outcome: ``state`` is ok, MISSED or UNRESOLVED; ``label`` the comparison's.

    ``value`` is the figure a known miss's bound is held against: the ratio (the lowest the run's
    noise allows, when there is an A/A control) or the speed-up; None for a verdict with no figure.
    ``lower_is_better`` says which way that figure improves.
    """

    state: str
    message: str
    label: str = ""
    value: float | None = None
    lower_is_better: bool = True


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
            return self._record(value <= target, message, cmp.label, value, lower_is_better=True)
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
            return self._record(value + above <= target, message, cmp.label, value - below, True)
        message += ": the target lies within the noise"
        self.verdicts.append(Verdict("UNRESOLVED", message, cmp.label, value - below, True))
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
        return self._record(value <= target, message, cmp.label, value, lower_is_better=True)

    def at_least(self, cmp: Comparison, target: float, what: str = "speed-up") -> bool:
        """Gate ``baseline / candidate >= target`` on :meth:`Comparison.worst_speedup`."""
        self.lines.extend(cmp.describe())
        value = cmp.worst_speedup()
        message = (
            f"{cmp.label}: {what} {value:.3f}x (worse of median pair speed-up "
            f"{statistics.median(1 / r for r in cmp.pair_ratios):.3f}x and ratio of medians "
            f"{1 / cmp.ratio_of_medians:.3f}x), target >= {target:g}x"
        )
        return self._record(value >= target, message, cmp.label, value, lower_is_better=False)

    def _record(
        self, ok: bool, message: str, label: str, value: float, lower_is_better: bool
    ) -> bool:
        self.verdicts.append(
            Verdict("ok" if ok else "MISSED", message, label, value, lower_is_better)
        )
        return ok

    def finish(self) -> int:
        """Print the spreads, then every verdict (the ratios last); 1 when a target is missed.

        UNRESOLVED verdicts (a target inside the run's noise: its A/A control and its spread)
        print with that noise and do not fail the run; they are not counted as met either. A
        target of this benchmark listed in :data:`KNOWN_MISSES` that is not met prints with the
        reason and does not fail while its figure stays within the known miss's bound (what this machine reaches);
        past the bound it fails like any miss: a regression is never excused.
        """
        for line in self.lines:
            print(line)
        counts = {"ok": 0, "MISSED": 0, "UNRESOLVED": 0, "known": 0}
        for v in self.verdicts:
            known = KNOWN_MISSES.get((self.name, v.label))
            if known is None or v.state == "ok":
                print(
                    f"{v.state:<6} {v.message}"
                    + (" (met; listed in KNOWN_MISSES)" if known else "")
                )
                counts[v.state] += 1
            elif known.excuses(v):
                print(
                    f"{v.state:<6} {v.message} [known miss, gated at {known.describe(v)}: {known.reason}]"
                )
                counts["known"] += 1
            else:
                print(
                    f"MISSED {v.message} [past the known miss's bound {known.describe(v)}: a regression]"
                )
                counts["MISSED"] += 1
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
            + (f", {counts['known']} known miss(es) within their bounds" if counts["known"] else "")
        )
        return 0


@dataclass(frozen=True)
class KnownMiss:
    """A target this machine cannot meet: why, what it would take, and the ``bound`` it does reach.

    The miss is excused only while the verdict's figure is no worse than ``bound`` (a ratio at
    most it, a speed-up at least it); past it the run fails, so the target still guards against
    a regression.
    """

    reason: str
    bound: float

    def excuses(self, v: Verdict) -> bool:
        if v.value is None:
            return False
        return v.value <= self.bound if v.lower_is_better else v.value >= self.bound

    def describe(self, v: Verdict) -> str:
        return f"{'<=' if v.lower_is_better else '>='} {self.bound:g}"


# Targets this 2-core machine misses or cannot resolve, each with why, what it would take and the
# bound it does reach, per (benchmark, comparison). They print on every run with the reason; a
# figure past its bound, and any other miss, fails `make bench-quick`.
KNOWN_MISSES = {
    ("bench_harness", "harness / bare time"): KnownMiss(
        "the harness's threads (metrics pump, MLflow sender, checkpoint writer) and the loopback "
        "MLflow server share 2 cores with the 2 torch threads: per 7 s trial 3 checkpoint writes of "
        "16 MB (~35 ms of CPU each), ~0.06 ms of sender CPU per point, the server's CPU (printed "
        "above: ~1.8 % of the trial) and ~0.06 s in close(), ~4 % by that count; CI-sized runs "
        "measured 1.02-1.15 (once every round within 1.04-1.16: a clear miss), and trials without "
        "MLflow or checkpoints could not be told from the full harness here (single trials swing "
        "between ~7.6 and ~10.6 ms/step); it needs cores to spare for those threads, the server "
        "off the trainer's node (as in a cluster) and an A/A control within ~1 %; a ratio still "
        "above 1.15 once the noise is taken off (1.05 at most in today's runs) fails",
        bound=1.15,
    ),
    ("bench_fetch", "[loopback] parallel vs sequential"): KnownMiss(
        "on loopback there is no round trip to hide: the fetch, the Python counting proxy and "
        "fake-gcs-server are all CPU-bound on 2 cores (1.6-2.3x measured; parallelism alone gives "
        "at most 2x on 2 cores); >= 4x is met with the round trip that GCS always has",
        bound=1.25,
    ),
    ("bench_fetch", "[loopback] repeat / first fetch"): KnownMiss(
        "the repeat is one listing, and fake-gcs-server ignores `fields`: 413 KB for 500 objects "
        "(GCS would send ~35 KB); the emulator takes ~4.5 ms to answer it and json ~3.9 ms to "
        "decode it, while 1 % of a 0.5-1.3 s first fetch is 5-13 ms; a plain-urllib3 listing was "
        "tried (no gain); it needs an emulator that honours `fields`",
        bound=0.04,
    ),
    ("bench_fetch", "[+20 ms RTT] repeat / first fetch"): KnownMiss(
        "the repeat is one 20 ms round trip plus the emulator's 413 KB listing (~13 ms here); 3 % of "
        "a first fetch of 0.7-0.8 s is 20-24 ms, so it misses (4.2-4.8 %) on a fast VM and meets it "
        "(2.4-2.9 %) on a slow one where the first fetch takes 1.4-1.8 s; it needs a first fetch "
        "of >= 1.1 s (more data) or an emulator that honours `fields`",
        bound=0.08,
    ),
}

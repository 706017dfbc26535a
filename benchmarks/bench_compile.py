"""Compile time and manifest size of the sweep for 10 and 1,000 trials.

Targets (issue 2): 1,000 trials compile (build + validate + YAML) in under 2 s (the slowest of the
repetitions), and the manifest is the same size within 1 % (the fan-out is a withParam over the
plan's output, not one task per trial). The 10-trial compile is the baseline, alternated with the
1,000-trial one in the same process.

    .venv/bin/python benchmarks/bench_compile.py [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import Comparison, Gate, alternate  # noqa: E402
from pipelines.build.argo import build  # noqa: E402
from pipelines.cli import dump_yaml  # noqa: E402
from pipelines.config import PIPELINES_DIR, parse_config  # noqa: E402
from pipelines.validate import validate_or_raise  # noqa: E402

TIME_TARGET = 2.0
SIZE_TOLERANCE = 0.01


def with_trials(base: dict[str, Any], n: int) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    raw["search"] = {
        "max_trials": 1000,
        "space": {
            "random": {
                "n_trials": n,
                "seed": 0,
                "params": {
                    "lr": {"loguniform": [1e-4, 1e-1]},
                    "hidden": {"choice": [32, 64, 128]},
                },
            },
            "fixed": {"batch_size": 64, "steps": 400, "seed": 0},
        },
    }
    return raw


def compile_once(raw: dict[str, Any], sizes: list[int]) -> float:
    start = time.perf_counter()
    cfg = parse_config(copy.deepcopy(raw))
    doc = build(cfg).to_dict()
    validate_or_raise(doc, "bench")
    text = dump_yaml(doc)
    elapsed = time.perf_counter() - start
    sizes.append(len(text.encode()))
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 3 repetitions")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.quick:
        args.repeats = 3
    base = yaml.safe_load((PIPELINES_DIR / "sweep.yaml").read_text())
    small, large = with_trials(base, 10), with_trials(base, 1000)
    small_sizes: list[int] = []
    large_sizes: list[int] = []
    compile_once(small, [])  # warm imports and the schema cache
    t10, t1000 = alternate(
        lambda: compile_once(small, small_sizes),
        lambda: compile_once(large, large_sizes),
        args.repeats,
    )
    gate = Gate("bench_compile")
    gate.note(
        f"manifest bytes: 10 trials {sorted(set(small_sizes))}, 1000 {sorted(set(large_sizes))}"
    )
    cmp = Comparison("compile 1000 vs 10 trials", t10, t1000, scale=1000, unit=" ms",
                     names=("10 trials", "1000 trials"))  # fmt: skip
    gate.lines.extend(cmp.describe())
    gate.check(
        max(t1000) < TIME_TARGET,
        f"1000 trials compile in {max(t1000):.3f} s at worst (target < {TIME_TARGET:g} s); "
        f"time ratio to 10 trials {cmp.worst_ratio():.3f}x (worse of the two medians)",
    )
    size_ratio = max(large_sizes) / min(small_sizes)
    gate.check(
        abs(size_ratio - 1) < SIZE_TOLERANCE and len(set(large_sizes)) == 1,
        f"manifest size ratio 1000/10 trials {size_ratio:.4f} (target within {SIZE_TOLERANCE:.0%})",
    )
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())

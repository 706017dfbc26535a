"""Compile time and manifest size of the sweep for 10 and 1,000 trials.

Targets (issue 2): 1,000 trials compile (build + validate + YAML) in under 2 s, and the manifest
is the same size within 1 % (the fan-out is a withParam over the plan's output, not one task per
trial). The 10-trial compile is the baseline in the same run.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import yaml

from pipelines.cli import dump_yaml
from pipelines.config import PIPELINES_DIR, parse_config
from pipelines.sweep import build
from pipelines.validate import validate_or_raise


def compile_once(raw: dict) -> tuple[float, int]:  # type: ignore[type-arg]
    start = time.perf_counter()
    cfg = parse_config(raw)
    doc = build(cfg).to_dict()
    validate_or_raise(doc, "bench")
    text = dump_yaml(doc)
    return time.perf_counter() - start, len(text.encode())


def main() -> int:
    base = yaml.safe_load((PIPELINES_DIR / "sweep.yaml").read_text())
    results = {}
    compile_once(base)  # warm imports and the schema cache
    for n in (10, 1000):
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
                }
            },
        }
        runs = [compile_once(raw) for _ in range(5)]
        results[n] = (statistics.median(t for t, _ in runs), runs[0][1])
        print(
            f"{n:>5} trials: compile {results[n][0] * 1000:7.1f} ms (median of 5), manifest {results[n][1]} bytes"
        )
    t_ratio = results[1000][0] / results[10][0]
    s_ratio = results[1000][1] / results[10][1]
    print(f"ratio 1000/10 trials: time {t_ratio:.3f}x, size {s_ratio:.4f}x")
    ok = results[1000][0] < 2.0 and abs(s_ratio - 1) < 0.01
    print("PASS" if ok else "FAIL", "(targets: 1000 trials < 2 s; size within 1 %)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

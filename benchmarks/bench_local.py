"""Local backend scheduling overhead (issue 3's targets), measured against the ideal in the same run.

1. 32 steps of ``sleep 1`` at parallelism 8: wall time / (4 s ideal + start-up) must be <= 1.15,
   where start-up is one run of a single ``true`` step (the fixed cost of a run) measured here.
2. A fan-out of 8 one-second steps at parallelism 8 must finish in under 2 s. For reference,
   kfp.local (the local runner KFP ships) took 14.7 s for that fan-out on this machine, because it
   runs loop iterations one after another.

Run: ``.venv/bin/python benchmarks/bench_local.py``; exits 1 when a target is missed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.backends.local import run_workflow

KFP_LOCAL_FANOUT_SECONDS = 14.7  # kfp.local SubprocessRunner, same fan-out, this machine (issue 3)
RATIO_TARGET = 1.15
FANOUT_TARGET = 2.0


def sleeps(n: int, parallelism: int, seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "bench-"},
        "spec": {
            "entrypoint": "main",
            "parallelism": parallelism,
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {
                                "name": "sleep",
                                "template": "sleep",
                                "withSequence": {"count": str(n)},
                            }
                        ]
                    },
                },
                {
                    "name": "sleep",
                    "container": {"image": "busybox", "command": ["sleep", str(seconds)]},
                },
            ],
        },
    }


def timed(doc: dict[str, Any], root: Path, label: str) -> float:
    started = time.perf_counter()
    result = run_workflow(
        doc, run_dir=root / label, shared_root=root / "shared", progress=False, cwd=root
    )
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"{label}: the workflow {result.status}")
    return elapsed


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed(sleeps(1, 1, 0), root, "warm-up")
        startup = min(timed(sleeps(1, 1, 0), root, f"startup-{i}") for i in range(3))
        wide = timed(sleeps(32, 8, 1), root, "32x1s-par8")
        fanout = timed(sleeps(8, 8, 1), root, "fanout-8x1s")

    ideal = 4.0 + startup
    ratio = wide / ideal
    print(f"start-up (one trivial step):        {startup:6.3f} s")
    print(
        f"32 x sleep 1, parallelism 8:        {wide:6.3f} s  ideal 4 s + start-up = {ideal:.3f} s"
    )
    print(f"  ratio to ideal:                   {ratio:6.3f}   (target <= {RATIO_TARGET})")
    print(f"fan-out 8 x sleep 1, parallelism 8: {fanout:6.3f} s  (target < {FANOUT_TARGET} s)")
    print(
        f"  kfp.local reference:              {KFP_LOCAL_FANOUT_SECONDS:6.1f} s  "
        f"-> {KFP_LOCAL_FANOUT_SECONDS / fanout:.1f}x faster here"
    )
    missed = []
    if ratio > RATIO_TARGET:
        missed.append(f"ratio {ratio:.3f} > {RATIO_TARGET}")
    if fanout >= FANOUT_TARGET:
        missed.append(f"fan-out {fanout:.3f} s >= {FANOUT_TARGET} s")
    if missed:
        print("MISSED: " + "; ".join(missed), file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

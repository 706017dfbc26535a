"""What a sweep's summary was computed from, as one hash: ``compare`` is skipped when it is unchanged.

A resubmitted sweep whose trials all finished before runs no trial; its ``compare`` finds the same
plan, results, attempt records and arguments as the one that wrote ``summary.json``, and replays
that summary instead of reading MLflow and drawing the plots again. Any change (a trial finished
or re-run, a spooled point left, another objective or budget) gives another hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.contract import (
    ATTEMPTS_FILE,
    OUTPUT_SUMMARY,
    RESULT_FILE,
    SPOOL_FILE,
    leaderboard_files,
    plan_file,
    summary_file,
    sweep_dir,
    trials_dir,
)
from components.outputs import write_step_outputs, write_summary

WATCHED = (RESULT_FILE, ATTEMPTS_FILE, SPOOL_FILE)


def inputs_hash(shared: Path, sweep_id: str, args: Mapping[str, Any]) -> str:
    """A hash of the sweep's plan, each trial's watched files (size and mtime) and ``args``."""
    h = hashlib.sha256(json.dumps(dict(args), sort_keys=True, default=str).encode())
    plan = plan_file(shared, sweep_id)
    h.update(plan.read_bytes() if plan.is_file() else b"no plan")
    for trial in sorted(p for p in trials_dir(shared, sweep_id).glob("*") if p.is_dir()):
        for name in WATCHED:
            try:
                st = (trial / name).stat()
            except FileNotFoundError:
                continue
            h.update(f"{trial.name}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def replay(
    shared: Path,
    sweep_id: str,
    args: dict[str, Any],
    outputs: Path,
    kfp_executor_input: str | None,
) -> int | None:
    """When nothing changed since ``summary.json`` was written (:mod:`components.fingerprint`):
    its outputs again, its leaderboard printed, its exit code; None when compare must run."""
    folder = sweep_dir(shared, sweep_id)
    try:
        summary = json.loads(summary_file(folder).read_text(encoding="utf-8"))
        markdown = leaderboard_files(folder)[0].read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if summary.get("inputs_hash") != inputs_hash(shared, sweep_id, args):
        return None
    files = {k: Path(v) for k, v in {**summary["files"], **summary["plots"]}.items()}
    if not all(p.is_file() for p in files.values()):
        return None
    write_summary(summary_file(folder), outputs / OUTPUT_SUMMARY, summary)
    write_step_outputs(sweep_id, summary, files, outputs, kfp_executor_input)
    print(markdown, end="")
    print(f"(nothing changed since sweep {sweep_id} was compared: its summary is replayed)")
    print((summary.get("registration") or {}).get("message", ""))
    return 0 if summary.get("status") == "succeeded" else 1

"""What a person reads about a step after it ran: its failure reason and its trial's record.

Pure file reading, shared by the live view, the final summary and ``make status``:

* the **reason** a step failed is the last error line of its log (``FileNotFoundError: ...``,
  ``ERROR ...: no credentials``), not only the retry verdict Argo writes in the node's message;
* a trial's **preemptions** come from its own record on the shared disk (``attempts.jsonl``, which
  also counts attempts killed before they could write anything), the one number the leaderboard,
  MLflow and the Slack digest show too;
* a trial that finished (done or pruned) in an earlier run of the sweep and was not trained again
  is **skipped**, whether a step of this run found it finished or the plan handed it to no step
  (:func:`planned_elsewhere`: a resubmitted sweep's finished trials start no process).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from components.attempts import read_attempts
from components.contract import attempts_file, plan_file, result_file
from pipelines.backends.local.records import read_json

ERROR_LINE = re.compile(
    r"(^\w+(\.\w+)*(Error|Exception|Interrupt)\b)|(\b(ERROR|CRITICAL|FATAL)\b)|(^error:)|"
    r"(\b(giving up|gave up)\b)",
    re.IGNORECASE,
)
TAIL_BYTES = 64 * 1024
MAX_REASON = 200


def last_error_line(log: Path | str | None) -> str:
    """The last line of ``log`` that reads as an error ('' when none or no log)."""
    if not log:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ERROR_LINE.search(line) and not line.startswith("Traceback"):
            return line[:MAX_REASON]
    return ""


def failure_reason(message: str, attempts: Iterable[Mapping[str, Any]]) -> str:
    """``<last error line of the last attempt's log> (<Argo's message>)``."""
    logs = [a.get("log") for a in attempts if a.get("log")]
    line = last_error_line(logs[-1]) if logs else ""
    if line and message:
        return f"{line} ({message})"
    return line or message


def trial_record(folder: Path | None, run_started: float) -> dict[str, Any]:
    """``{"preemptions", "attempts", "skipped", "params", "redone"}`` of a trial from its own files
    (``redone``: the work preemptions made it do again, ``40 steps, 2.1 s``, or empty).

    ``skipped``: done before the run that started at ``run_started`` (an earlier run finished it).
    """
    if folder is None:
        return {"preemptions": 0, "attempts": 0, "skipped": False, "params": {}, "redone": ""}
    history = read_attempts(attempts_file(folder))
    result = read_json(result_file(folder)) or {}
    done = result.get("status") in ("done", "pruned")  # finished: a retry trains nothing
    preemptions = history.preemptions
    if done and isinstance(result.get("preemptions"), int):
        preemptions = int(result["preemptions"])
    steps, seconds = history.lost_steps, history.lost_seconds
    if done and isinstance(result.get("lost_steps"), int):
        steps, seconds = result["lost_steps"], float(result.get("lost_seconds") or 0.0)
    return {
        "preemptions": preemptions,
        "redone": f"{steps} steps, {seconds:.1f} s" if steps else "",
        "attempts": history.attempts,
        "skipped": done and _before(result.get("finished_at"), run_started),
        "params": result.get("params") or {},
    }


def params_text(params: Mapping[str, Any], limit: int = 60) -> str:
    """``lr=0.003 hidden=32`` (floats to 4 significant digits), cut at ``limit``."""
    bits = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    text = " ".join(bits)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_params(roots: Iterable[Path], sweep_id: str) -> dict[str, dict[str, Any]]:
    """Each planned trial's params (the ones that vary across the plan), by trial id."""
    for root in roots:
        try:
            plan = json.loads(plan_file(root, sweep_id).read_text())
            trials = {
                e["id"]: json.loads(e["params"]) if isinstance(e["params"], str) else e["params"]
                for e in plan
            }
        except (OSError, ValueError, TypeError, KeyError):
            continue
        names = sorted({k for p in trials.values() for k in p})
        varying = [n for n in names if len({json.dumps(p.get(n)) for p in trials.values()}) > 1]
        return {t: {n: p[n] for n in (varying or names) if n in p} for t, p in trials.items()}
    return {}


def planned_elsewhere(roots: Iterable[Path], sweep_id: str, handed_out: Iterable[str]) -> list[str]:
    """The trials of the sweep's plan that no step of this run got (``handed_out``: the trial ids
    its steps got), in plan order: those a resubmitted sweep's plan left out, finished before."""
    given = set(handed_out)
    return [t for t in plan_params(roots, sweep_id) if t not in given]


def _before(stamp: Any, started: float) -> bool:
    """Whether the ISO time ``stamp`` (``...Z``, whole seconds) is before ``started``."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return when < started - 1

"""The exit handler: one Slack message per sweep, on success and on failure alike.

``python -m components.notify --sweep-id ID --status {{workflow.status}} --workflow-name
{{workflow.name}}``. Reads ``sweeps/<id>/summary.json`` (written by compare); when the sweep failed
before compare ran, counts the trials from their ``result.json`` files instead. Sends through
slack-sdk's ``WebhookClient`` to ``SLACK_WEBHOOK_URL``: unset means "say so and succeed"; a failed
send is logged (never with the URL) and exits 1.

The message is :mod:`components.digest`'s; the parent run's end :mod:`components.sweep_run_end`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.contract import (
    SharedRootError,
    plan_file,
    resolve_sweep_id,
    shared_root,
    study_file,
    summary_file,
    sweep_dir,
)
from components.digest import build_message, duration, links
from components.leaderboard import load_trials
from components.step_start import start_step
from components.summary import outcomes
from components.sweep_run_end import end_sweep_run, ended_before

__all__ = [
    "build_message",
    "duration",
    "end_sweep_run",
    "ended_before",
    "fallback_summary",
    "links",
    "load_summary",
    "main",
    "notify",
    "send",
]

log = logging.getLogger("sweepyard.notify")


def load_summary(shared: Path, sweep_id: str) -> dict[str, Any] | None:
    """``summary.json`` when compare wrote one (None when missing or unreadable)."""
    path = summary_file(sweep_dir(shared, sweep_id))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        log.warning("%s is not valid JSON (%s); counting trials from their results", path, exc)
        return None
    return data if isinstance(data, dict) else None


def fallback_summary(shared: Path, sweep_id: str) -> dict[str, Any]:
    """What can be said without compare: trial counts, failures, preemptions, wall time."""
    try:
        rows = load_trials(shared, sweep_id, objective="")
    except ValueError as exc:
        log.warning("%s", exc)
        return {"sweep_id": sweep_id, "trials": None, "reason": "no plan: the sweep stopped early"}
    started = _started(shared, sweep_id)
    return {
        "sweep_id": sweep_id,
        "best": None,
        **outcomes(rows),
        "wall_seconds": round(max(0.0, time.time() - started), 1),
        "reason": "compare did not run: counts are from the trials' results",
    }


def _started(shared: Path, sweep_id: str) -> float:
    """When the sweep began: its plan (grid, random), else its study (adaptive), else its folder."""
    folder = sweep_dir(shared, sweep_id)
    for path in (plan_file(shared, sweep_id), study_file(shared, sweep_id), folder):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return time.time()


def send(url: str, message: Mapping[str, Any]) -> tuple[bool, str]:
    """Post ``message`` to the webhook; (ok, what happened) with no URL in the description."""
    from slack_sdk.webhook import WebhookClient

    try:
        response = WebhookClient(url, timeout=15).send(
            text=message["text"], blocks=message["blocks"]
        )
    except Exception as exc:  # the network, DNS, TLS: report the kind, never the URL
        return False, f"{type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {str(response.body)[:300]}"
    return True, f"HTTP {response.status_code}"


def notify(
    *,
    sweep_id: str,
    status: str,
    workflow_name: str,
    shared: Path | None,
    env: Mapping[str, str],
) -> int:
    """Build and send the digest; the exit code of the step."""
    from components.runtime.alerts import scrub

    summary = load_summary(shared, sweep_id) if shared else None
    ended = end_sweep_run(sweep_id, status, env, shared=shared, summary=summary)
    if summary is None:
        summary = fallback_summary(shared, sweep_id) if shared else {"sweep_id": sweep_id}
    if ended.get("sweep_runs_url") and not (summary.get("mlflow") or {}).get("sweep_runs_url"):
        summary["mlflow"] = {**(summary.get("mlflow") or {}), **ended}
    message = scrub(
        build_message(
            sweep_id=sweep_id, status=status, workflow_name=workflow_name, summary=summary, env=env
        )
    )
    print(message["text"])
    url = env.get("SLACK_WEBHOOK_URL", "").strip()
    if not url:
        log.info("SLACK_WEBHOOK_URL is not set: no Slack message sent")
        return 0
    ok, detail = send(url, message)
    if ok:
        log.info("Slack message sent for sweep %s (%s)", sweep_id, detail)
        return 0
    detail = scrub(detail)
    log.error("the Slack webhook failed for sweep %s: %s", sweep_id, detail)
    from components.runtime.alerts import report_error

    report_error(RuntimeError(f"Slack webhook failed: {detail}"))
    return 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m components.notify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sweep-id", default="", help="default: the workflow's name")
    parser.add_argument(
        "--status", required=True, help="{{workflow.status}}: Succeeded|Failed|Error"
    )
    parser.add_argument("--workflow-name", default="", help="{{workflow.name}}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from components.runtime.alerts import set_alert_tags

    start_step("notify")
    args = _parse_args(argv)
    workflow = args.workflow_name or os.environ.get("SWEEPYARD_WORKFLOW_NAME", "")
    env = {**os.environ, "SWEEPYARD_WORKFLOW_NAME": workflow} if workflow else dict(os.environ)
    try:
        sweep_id = resolve_sweep_id(args.sweep_id, env)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    set_alert_tags(sweep=sweep_id)
    try:
        shared: Path | None = shared_root()
    except SharedRootError:
        shared = None
    if shared is None or not shared.is_dir():
        log.warning(
            "SWEEPYARD_SHARED is not a folder (%r): the digest has no trial counts",
            str(shared or ""),
        )
        shared = None
    return notify(
        sweep_id=sweep_id,
        status=args.status,
        workflow_name=workflow or sweep_id,
        shared=shared,
        env=env,
    )


if __name__ == "__main__":
    sys.exit(main())

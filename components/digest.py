"""The Slack digest of a sweep: one message (``text`` and ``blocks``) built from its summary.

Links come from the environment: ``MLFLOW_UI_URL`` (else ``MLFLOW_TRACKING_URI``, credentials
stripped), ``TENSORBOARD_URL``, ``ARGO_UI_URL`` with ``ARGO_NAMESPACE`` (else the pod's namespace).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.cost import cost_text
from components.leaderboard import fmt

STATUS_ICONS = {"Succeeded": ":white_check_mark:", "Failed": ":x:", "Error": ":boom:"}
MAX_FAILED_SHOWN = 5
MAX_PRUNED_SHOWN = 3
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def duration(seconds: float | None) -> str:
    """``3725`` -> ``1h 2m 5s``."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return " ".join(p for p in (f"{h}h" if h else "", f"{m}m" if h or m else "", f"{s}s") if p)


def links(summary: Mapping[str, Any], workflow_name: str, env: Mapping[str, str]) -> dict[str, str]:
    """MLflow (the sweep's run, else its experiment, else the server), TensorBoard, Argo UI."""
    from components.runtime.alerts import strip_url_credentials

    out: dict[str, str] = {}
    mlflow = summary.get("mlflow") or {}
    base = env.get("MLFLOW_UI_URL") or env.get("MLFLOW_TRACKING_URI") or ""
    if mlflow.get("sweep_runs_url"):
        out["MLflow runs of the sweep"] = mlflow["sweep_runs_url"]
    if mlflow.get("run_url"):
        out["MLflow sweep run"] = mlflow["run_url"]
    if not mlflow.get("sweep_runs_url") and mlflow.get("experiment_url"):
        out["MLflow experiment"] = mlflow["experiment_url"]
    elif not mlflow.get("sweep_runs_url") and base.startswith(("http://", "https://")):
        out["MLflow"] = strip_url_credentials(base).rstrip("/")
    if env.get("TENSORBOARD_URL"):
        out["TensorBoard"] = strip_url_credentials(env["TENSORBOARD_URL"]).rstrip("/")
    argo = env.get("ARGO_UI_URL", "").rstrip("/")
    if argo:
        namespace = env.get("ARGO_NAMESPACE") or _pod_namespace()
        page = f"/workflows/{namespace}/{workflow_name}" if namespace else "/workflows"
        out["Argo workflow"] = strip_url_credentials(argo) + page
    return out


def _pod_namespace() -> str:
    try:
        return POD_NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def build_message(
    *,
    sweep_id: str,
    status: str,
    workflow_name: str,
    summary: Mapping[str, Any],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The Slack payload: ``text`` (notifications, fallbacks) and ``blocks``."""
    best = summary.get("best")
    objective = (summary.get("objective") or {}).get("metric", "objective")
    trials = summary.get("trials")
    trials_text = _trials_text(trials, summary.get("max_failed_trials")) if trials else "unknown"
    fields = _fields(summary, status, workflow_name, objective, trials_text)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"Sweep {sweep_id}: {status}"[:150]},
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in fields.items()],
        },
    ]
    failed = summary.get("failed") or []
    if failed:
        blocks.append(_failed_block(failed))
    if summary.get("reason"):
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": str(summary["reason"])}]}
        )
    found = links(summary, workflow_name, env)
    if found:
        text = " · ".join(f"<{url}|{name}>" for name, url in found.items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    best_short = f", best {best['trial_id']} {objective}={fmt(best.get('value'))}" if best else ""
    text = f"Sweep {sweep_id} {status}: {trials_text}{best_short}"
    return {"text": text, "blocks": blocks}


def _fields(
    summary: Mapping[str, Any], status: str, workflow_name: str, objective: str, trials_text: str
) -> dict[str, str]:
    """The digest's fields, title to text: status, best trial, trials, preemptions, time, cost,
    early stopping and the model's registration (the last three when there is something to say)."""
    icon = STATUS_ICONS.get(status, ":grey_question:")
    best = summary.get("best")
    trials = summary.get("trials")
    if best:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in sorted((best.get("params") or {}).items()))
        best_text = f"`{best['trial_id']}` {objective} = *{fmt(best.get('value'))}*\n{params}"
    else:
        best_text = "none (no trial succeeded)" if trials else "none"
    fields = {
        "Workflow status": f"{icon} {status}",
        "Workflow": f"`{workflow_name}`",
        "Best trial": best_text,
        "Trials": trials_text,
        "Preemptions survived": _preemptions_text(summary),
        "Wall time": duration(summary.get("wall_seconds")),
    }
    if summary.get("cost"):
        fields["Cost"] = cost_text(summary["cost"])  # with the work lost to preemptions
    elif (lost := summary.get("lost_work") or {}).get("steps"):
        fields["Lost work"] = f"{lost['steps']} steps, {float(lost.get('seconds') or 0):.1f} s"
    if trials and trials.get("pruned"):
        fields["Early stopping"] = _pruned_text(summary)
    registration = summary.get("registration") or {}
    if registration.get("message"):  # compare's line: registered as champion, or why not
        fields["Model"] = str(registration["message"])
    return fields


def _failed_block(failed: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The failed trials and their errors, the first :data:`MAX_FAILED_SHOWN` of them."""
    lines = [
        f"• `{f['trial_id']}`: {str(f.get('error') or 'unknown error')[:200]}"
        for f in failed[:MAX_FAILED_SHOWN]
    ]
    if len(failed) > MAX_FAILED_SHOWN:
        lines.append(f"… and {len(failed) - MAX_FAILED_SHOWN} more")
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*Failed trials*\n" + "\n".join(lines)},
    }


def _trials_text(trials: Mapping[str, Any], budget: Any = None) -> str:
    """``5 done / 3 pruned / 1 failed (budget 2) / 2 not started (of 11)`` (no pruned or not
    started part when there are none, no budget when it is not known)."""
    pruned = f" / {trials['pruned']} pruned" if trials.get("pruned") else ""
    allowed = f" (budget {budget})" if budget is not None else ""
    skipped = f" / {trials['skipped']} not started" if trials.get("skipped") else ""
    return (
        f"{trials['done']} done{pruned} / {trials['failed']} failed{allowed}{skipped} "
        f"(of {trials['total']})"
    )


def _pruned_text(summary: Mapping[str, Any]) -> str:
    """``3 pruned (`a1b2` @ step 30, ...)`` and the compute-saved line on the next."""
    pruned = summary.get("pruned") or []
    count = (summary.get("trials") or {}).get("pruned") or len(pruned)
    shown = ", ".join(
        f"`{p['trial_id']}` @ step {p.get('at_step')}" for p in pruned[:MAX_PRUNED_SHOWN]
    )
    more = f", … {len(pruned) - MAX_PRUNED_SHOWN} more" if len(pruned) > MAX_PRUNED_SHOWN else ""
    text = f"{count} pruned" + (f" ({shown}{more})" if shown else "")
    found = summary.get("compute_saved") or {}
    return text + (f"\n{found['text']}" if found.get("text") else "")


def _preemptions_text(summary: Mapping[str, Any]) -> str:
    """``3 (a1b2c3d4e5f6 ×2, 0f9e8d7c6b5a ×1)``: the total and each preempted trial's count."""
    total = str(summary.get("preemptions", 0) or 0)
    per_trial = summary.get("preempted_trials") or {}
    if not per_trial:
        return total
    shown = sorted(per_trial.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"{total} (" + ", ".join(f"`{t}` ×{n}" for t, n in shown) + ")"

"""The exit handler: one Slack message per sweep, on success and on failure alike.

``python -m components.notify --sweep-id ID --status {{workflow.status}} --workflow-name
{{workflow.name}}``. Reads ``sweeps/<id>/summary.json`` (written by compare); when the sweep failed
before compare ran, counts the trials from their ``result.json`` files instead. Sends through
slack-sdk's ``WebhookClient`` to ``SLACK_WEBHOOK_URL``: unset means "say so and succeed"; a failed
send is logged (never with the URL) and exits 1.

Links come from the environment: ``MLFLOW_UI_URL`` (else ``MLFLOW_TRACKING_URI``, credentials
stripped), ``TENSORBOARD_URL``, ``ARGO_UI_URL`` with ``ARGO_NAMESPACE`` (else the pod's namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.contract import resolve_sweep_id, sweep_dir
from components.cost import cost_text
from components.leaderboard import fmt, load_trials
from components.summary import outcomes

log = logging.getLogger("sweepyard.notify")

STATUS_ICONS = {"Succeeded": ":white_check_mark:", "Failed": ":x:", "Error": ":boom:"}
MAX_FAILED_SHOWN = 5
MAX_PRUNED_SHOWN = 3
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def load_summary(shared: Path, sweep_id: str) -> dict[str, Any] | None:
    """``summary.json`` when compare wrote one (None when missing or unreadable)."""
    path = sweep_dir(shared, sweep_id) / "summary.json"
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
    folder = sweep_dir(shared, sweep_id)
    try:
        rows = load_trials(shared, sweep_id, objective="")
    except ValueError as exc:
        log.warning("%s", exc)
        return {"sweep_id": sweep_id, "trials": None, "reason": "no plan: the sweep stopped early"}
    started = _started(folder)
    return {
        "sweep_id": sweep_id,
        "best": None,
        **outcomes(rows),
        "wall_seconds": round(max(0.0, time.time() - started), 1),
        "reason": "compare did not run: counts are from the trials' results",
    }


def _started(folder: Path) -> float:
    """When the sweep began: its plan (grid, random), else its study (adaptive), else its folder."""
    for path in (folder / "plan.json", folder / "study.journal", folder):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return time.time()


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
    icon = STATUS_ICONS.get(status, ":grey_question:")
    best = summary.get("best")
    objective = (summary.get("objective") or {}).get("metric", "objective")
    trials = summary.get("trials")
    if best:
        params = ", ".join(f"{k}={fmt(v)}" for k, v in sorted((best.get("params") or {}).items()))
        best_text = f"`{best['trial_id']}` {objective} = *{fmt(best.get('value'))}*\n{params}"
    else:
        best_text = "none (no trial succeeded)" if trials else "none"
    trials_text = _trials_text(trials, summary.get("max_failed_trials")) if trials else "unknown"
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
        lines = [
            f"• `{f['trial_id']}`: {str(f.get('error') or 'unknown error')[:200]}"
            for f in failed[:MAX_FAILED_SHOWN]
        ]
        if len(failed) > MAX_FAILED_SHOWN:
            lines.append(f"… and {len(failed) - MAX_FAILED_SHOWN} more")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Failed trials*\n" + "\n".join(lines)},
            }
        )
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


# notify's own record beside summary.json: how it last ended the sweep's parent run
ENDED_FILE = "mlflow-ended.json"


def _tracking_uri(env: Mapping[str, str]) -> str | None:
    uri = (env.get("MLFLOW_TRACKING_URI") or "").strip()
    return uri or None


def _ended_key(
    uri: str, status: str, summary: Mapping[str, Any] | None, env: Mapping[str, str]
) -> dict[str, str] | None:
    """What makes ending the parent run again a no-op: the same server, the same workflow status,
    and a summary of the same inputs (no trial ran, nothing was compared anew since)."""
    from components.runtime.alerts import strip_url_credentials

    inputs = (summary or {}).get("inputs_hash")
    if not inputs:
        return None
    return {
        "tracking": strip_url_credentials(uri),
        "experiment": env.get("MLFLOW_EXPERIMENT_NAME", ""),
        "status": status,
        "inputs_hash": str(inputs),
    }


def ended_before(
    shared: Path | None, sweep_id: str, key: Mapping[str, str] | None
) -> dict[str, str] | None:
    """What :func:`end_sweep_run` returned when it last ended the run under the same ``key``."""
    if shared is None or key is None:
        return None
    try:
        doc = json.loads((sweep_dir(shared, sweep_id) / ENDED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != dict(key):
        return None
    ended = doc.get("ended")
    return ended if isinstance(ended, dict) and ended.get("run_id") else None


def end_sweep_run(
    sweep_id: str,
    status: str,
    env: Mapping[str, str],
    *,
    shared: Path | None = None,
    summary: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The sweep's parent MLflow run ends FINISHED or FAILED with the workflow.

    Returns ``{"run_id", "status", "sweep_runs_url"}`` (empty when tracking is off or failed).

    The exit handler runs whatever step ended the sweep, so this is where the run always ends. A
    tracking server that does not answer is logged, never fatal: the digest still goes out. A
    resubmitted sweep in which nothing happened (the same server and workflow status, a summary
    of the same inputs as when the run was last ended here) does not ask MLflow again: the run
    already ended so, and a local run starts no MLflow server for it.
    """
    uri = _tracking_uri(env)
    if uri is None:
        return {}
    key = _ended_key(uri, status, summary, env)
    if (before := ended_before(shared, sweep_id, key)) is not None:
        log.info(
            "MLflow run %s of sweep %s ended %s before, and nothing changed since",
            before["run_id"],
            sweep_id,
            before.get("status"),
        )
        return before
    out = _end_sweep_run(sweep_id, status, env, uri)
    if out and shared is not None and key is not None:
        from components.fsio import atomic_write_text

        record = json.dumps({"key": key, "ended": out}, indent=1, sort_keys=True) + "\n"
        atomic_write_text(sweep_dir(shared, sweep_id) / ENDED_FILE, record)
    return out


def _end_sweep_run(sweep_id: str, status: str, env: Mapping[str, str], uri: str) -> dict[str, str]:
    from components.runtime import tracking
    from components.runtime.alerts import strip_url_credentials

    _wait_for_loopback(uri)
    tracking.configure_http()  # a dead server must not hold the digest back for minutes
    try:
        c = tracking.client(uri)
        run_id, state = tracking.finish_sweep_run(sweep_id, status, mlflow_client=c)
        experiment_id = str(c.get_run(run_id).info.experiment_id)
    except Exception as exc:  # MLflow down or refusing: say so, send the digest anyway
        log.warning("could not end the sweep's MLflow run: %s: %s", type(exc).__name__, exc)
        return {}
    log.info("MLflow run %s of sweep %s ended %s", run_id, sweep_id, state)
    out = {"run_id": run_id, "status": state}
    base = env.get("MLFLOW_UI_URL") or uri
    if base.startswith(("http://", "https://")):
        base = strip_url_credentials(base).rstrip("/")
        out["sweep_runs_url"] = tracking.sweep_runs_url(base, experiment_id, sweep_id)
    return out


LOOPBACK_WAIT_SECONDS = 120.0


def _wait_for_loopback(uri: str) -> None:
    """A tracking server on this machine that accepts connections but does not answer yet is
    starting (the local backend starts its server on first use): wait for its health check, as
    MLflow's own patient client would, before the short timeouts below. A remote server, or none
    listening (refused at once), is not waited for."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        health = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))
        urllib.request.urlopen(health, timeout=LOOPBACK_WAIT_SECONDS).close()


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
    from components.runtime.alerts import init_alerts, set_alert_tags

    init_alerts("notify")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parse_args(argv)
    workflow = args.workflow_name or os.environ.get("SWEEPYARD_WORKFLOW_NAME", "")
    env = {**os.environ, "SWEEPYARD_WORKFLOW_NAME": workflow} if workflow else dict(os.environ)
    try:
        sweep_id = resolve_sweep_id(args.sweep_id, env)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    set_alert_tags(sweep=sweep_id)
    shared_env = os.environ.get("SWEEPYARD_SHARED", "")
    shared = Path(shared_env) if shared_env and Path(shared_env).is_dir() else None
    if shared is None:
        log.warning(
            "SWEEPYARD_SHARED is not a folder (%r): the digest has no trial counts", shared_env
        )
    return notify(
        sweep_id=sweep_id,
        status=args.status,
        workflow_name=workflow or sweep_id,
        shared=shared,
        env=env,
    )


if __name__ == "__main__":
    sys.exit(main())

"""The end of a sweep's parent MLflow run, FINISHED or FAILED with the workflow (the exit handler
runs whatever step ended the sweep, so this is where the run always ends), recorded beside the
summary so a resubmitted sweep in which nothing happened does not ask MLflow again."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.contract import sweep_dir, sweep_run_ended_file

log = logging.getLogger("sweepyard.notify")


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
        doc = json.loads(
            sweep_run_ended_file(sweep_dir(shared, sweep_id)).read_text(encoding="utf-8")
        )
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
        atomic_write_text(sweep_run_ended_file(sweep_dir(shared, sweep_id)), record)
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

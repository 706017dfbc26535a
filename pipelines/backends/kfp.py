"""Submit and schedule the compiled KFP package through ``kfp.Client``.

``make submit PIPELINE=sweep BACKEND=kfp`` and ``make schedule PIPELINE=sweep BACKEND=kfp``. The
package is uploaded once per content: the pipeline is the config's name, the version is named by
the package's hash, so submitting an unchanged sweep again reuses the version and only starts a run.

Environment: ``KFP_HOST`` (the API endpoint, e.g. ``https://kubeflow.example.com/pipeline``),
``KFP_TOKEN`` or ``KFP_EXISTING_TOKEN`` (a bearer token, when the endpoint needs one),
``KFP_NAMESPACE`` (the profile namespace of a multi-user Kubeflow), ``KFP_EXPERIMENT`` (default: the
config's experiment) and ``KFP_UI_HOST`` (for links, default ``KFP_HOST``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipelines.config import SweepConfig
from pipelines.cron import CronError, to_kfp

T = TypeVar("T")
UTC_ZONES = {"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Etc/Universal", "Etc/Zulu", "Universal", "Zulu"}
HEALTHZ = "/apis/v2beta1/healthz"
TIMEOUT_S = 15


class KfpError(Exception):
    """A failure to explain to the user in one message (no traceback)."""


@dataclass(frozen=True)
class Target:
    """Where and as whom to talk to Kubeflow Pipelines."""

    host: str
    token: str | None
    namespace: str | None
    experiment: str
    ui: str

    def __repr__(self) -> str:  # never show the token
        return f"Target(host={self.host!r}, namespace={self.namespace!r})"


def target(cfg: SweepConfig, env: Mapping[str, str]) -> Target:
    """The KFP endpoint from the environment.

    Raises:
        KfpError: ``KFP_HOST`` is missing or not an http(s) URL.
    """
    host = (env.get("KFP_HOST") or "").strip().rstrip("/")
    if not host:
        raise KfpError(
            "KFP_HOST is not set: point it at the Kubeflow Pipelines API, e.g. "
            "KFP_HOST=https://kubeflow.example.com/pipeline (or http://localhost:8888 after "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`)"
        )
    if not host.startswith(("http://", "https://")):
        raise KfpError(f"KFP_HOST={host!r} must start with http:// or https://")
    token = (env.get("KFP_TOKEN") or env.get("KFP_EXISTING_TOKEN") or "").strip() or None
    return Target(
        host=host,
        token=token,
        namespace=(env.get("KFP_NAMESPACE") or "").strip() or None,
        experiment=(env.get("KFP_EXPERIMENT") or "").strip() or cfg.experiment,
        ui=(env.get("KFP_UI_HOST") or "").strip().rstrip("/") or host,
    )


def submit(
    package_path: Path, *, cfg: SweepConfig, sweep_id: str | None, env: Mapping[str, str]
) -> int:
    """Upload the package (once per content) and start a run; print the run id and its link."""
    try:
        t = target(cfg, env)
        client = connect(t)
        pipeline_id, version_id, version = upload(client, t, package_path, cfg)
        experiment_id = experiment(client, t)
        params = {"sweep_id": sweep_id} if sweep_id else {}
        name = f"{cfg.name} {sweep_id}" if sweep_id else cfg.name
        run = _call(
            t,
            "start the run",
            client.run_pipeline,
            experiment_id=experiment_id,
            job_name=name,
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
    except KfpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"KFP run {run.run_id} of {cfg.name} (version {version}) in experiment {t.experiment}")
    print(f"  {t.ui}/#/runs/details/{run.run_id}")
    return 0


def schedule(package_path: Path, *, cfg: SweepConfig, env: Mapping[str, str]) -> int:
    """Create (or replace) the pipeline's recurring run: translated cron, one run at a time."""
    try:
        if cfg.schedule is None:
            raise KfpError(f"pipeline {cfg.name!r} has no 'schedule' in its config")
        cron = kfp_cron(cfg)
        t = target(cfg, env)
        client = connect(t)
        pipeline_id, version_id, version = upload(client, t, package_path, cfg)
        experiment_id = experiment(client, t)
        name = f"{cfg.name}-schedule"
        for old in _existing_schedules(client, t, experiment_id, name):
            same = (
                old.trigger is not None
                and old.trigger.cron_schedule is not None
                and old.trigger.cron_schedule.cron == cron
                and old.pipeline_version_reference is not None
                and old.pipeline_version_reference.pipeline_version_id == version_id
                and str(old.max_concurrency) == "1"
                and bool(old.no_catchup)
                and old.mode == "ENABLE"
            )
            if same:
                print(f"KFP recurring run {old.recurring_run_id} is up to date ({cron!r})")
                print(f"  {t.ui}/#/recurringrun/details/{old.recurring_run_id}")
                return 0
            _call(
                t,
                "replace the old recurring run",
                client.delete_recurring_run,
                recurring_run_id=old.recurring_run_id,
            )
            print(f"deleted the outdated recurring run {old.recurring_run_id}")
        job = _call(
            t,
            "create the recurring run",
            client.create_recurring_run,
            experiment_id=experiment_id,
            job_name=name,
            description=f"{cfg.schedule.cron} ({cfg.schedule.timezone}), KFP cron {cron}",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            pipeline_id=pipeline_id,
            version_id=version_id,
            enabled=True,
        )
    except KfpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"KFP recurring run {job.recurring_run_id}: {cfg.name} (version {version}) "
        f"at {cron!r} (from {cfg.schedule.cron!r}), at most one run at a time, no catch-up"
    )
    print(f"  {t.ui}/#/recurringrun/details/{job.recurring_run_id}")
    return 0


def kfp_cron(cfg: SweepConfig) -> str:
    """The schedule's KFP cron; KFP has no per-schedule time zone, so only UTC is exact."""
    assert cfg.schedule is not None
    if cfg.schedule.timezone not in UTC_ZONES:
        raise KfpError(
            f"schedule.timezone is {cfg.schedule.timezone!r}, but a KFP recurring run has no time "
            "zone of its own: the scheduler uses its CRON_SCHEDULE_TIMEZONE (UTC by default). "
            "Write the cron in UTC and set schedule.timezone: Etc/UTC (see deploy/KUBEFLOW.md)"
        )
    try:
        return to_kfp(cfg.schedule.cron)
    except CronError as e:
        raise KfpError(f"schedule.cron cannot be translated for KFP: {e}") from None


def connect(t: Target) -> Any:
    """A ``kfp.Client`` after a health check that turns the usual failures into clear errors."""
    health = _healthz(t)
    if health.get("multi_user") and not t.namespace:
        raise KfpError(
            f"KFP at {t.host} is multi-user: set KFP_NAMESPACE to your profile namespace"
        )
    import kfp

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return _call(
            t,
            "connect",
            kfp.Client,
            host=t.host,
            existing_token=t.token,
            namespace=t.namespace or "kubeflow",
        )


def upload(client: Any, t: Target, package_path: Path, cfg: SweepConfig) -> tuple[str, str, str]:
    """``(pipeline id, version id, version name)``; uploads only what the server lacks."""
    try:
        data = package_path.read_bytes()
    except OSError as e:
        raise KfpError(f"cannot read the KFP package {package_path}: {e.strerror}") from None
    version = f"{cfg.name}-{hashlib.sha256(data).hexdigest()[:12]}"
    listed = _call(
        t,
        "look up the pipeline",
        client.list_pipelines,
        filter=_name_filter(cfg.name),
        namespace=t.namespace,
    )
    named = [p for p in (listed.pipelines or []) if p.display_name == cfg.name]
    pipeline_id = named[0].pipeline_id if named else None
    if pipeline_id is None:
        created = _call(
            t,
            "upload the pipeline",
            client.upload_pipeline,
            pipeline_package_path=str(package_path),
            pipeline_name=cfg.name,
            description=cfg.description or None,
            namespace=t.namespace,
        )
        pipeline_id = created.pipeline_id
    found = _call(
        t,
        "list the pipeline's versions",
        client.list_pipeline_versions,
        pipeline_id=pipeline_id,
        filter=_name_filter(version),
    )
    if found.pipeline_versions:
        return pipeline_id, found.pipeline_versions[0].pipeline_version_id, version
    created_version = _call(
        t,
        "upload the pipeline version",
        client.upload_pipeline_version,
        pipeline_package_path=str(package_path),
        pipeline_version_name=version,
        pipeline_id=pipeline_id,
        description=f"compiled from pipelines/{cfg.name}.yaml, image {cfg.image}",
    )
    return pipeline_id, created_version.pipeline_version_id, version


def experiment(client: Any, t: Target) -> str:
    """The id of the experiment (created when missing)."""
    exp = _call(
        t,
        "find or create the experiment",
        client.create_experiment,
        t.experiment,
        None,
        t.namespace,
    )
    return str(exp.experiment_id)


def _existing_schedules(client: Any, t: Target, experiment_id: str, name: str) -> list[Any]:
    found = _call(
        t,
        "list the recurring runs",
        client.list_recurring_runs,
        experiment_id=experiment_id,
        filter=_name_filter(name),
        page_size=100,
    )
    return [r for r in (found.recurring_runs or []) if r.display_name == name]


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def _healthz(t: Target) -> dict[str, Any]:
    req = urllib.request.Request(t.host + HEALTHZ, headers={"Accept": "application/json"})
    if t.token:
        req.add_header("Authorization", f"Bearer {t.token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 (http(s) only)
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise KfpError(_http_problem(t, "check its health", e.code, e.reason, _body(e))) from None
    except (urllib.error.URLError, OSError) as e:
        raise KfpError(_unreachable(t, getattr(e, "reason", e))) from None
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise KfpError(
            f"{t.host}{HEALTHZ} did not answer JSON: is KFP_HOST the Kubeflow Pipelines API "
            "(not a login page)? Behind an auth proxy, set KFP_TOKEN"
        ) from None
    return doc if isinstance(doc, dict) else {}


def _call(t: Target, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with the client's exceptions turned into :class:`KfpError`."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the client prints its own links
            return fn(*args, **kwargs)
    except kfp_server_api.ApiException as e:
        body = e.body.decode() if isinstance(e.body, bytes) else (e.body or "")
        raise KfpError(_http_problem(t, what, e.status or 0, e.reason, body)) from None
    except urllib3.exceptions.HTTPError as e:
        raise KfpError(_unreachable(t, getattr(e, "reason", None) or e)) from None
    except (ValueError, OSError) as e:
        raise KfpError(f"could not {what} on KFP at {t.host}: {e}") from None


def _unreachable(t: Target, reason: object) -> str:
    return (
        f"cannot reach Kubeflow Pipelines at {t.host} ({reason}): check KFP_HOST, your network "
        "or VPN, or port-forward the API (`kubectl port-forward -n kubeflow svc/ml-pipeline "
        "8888:8888`, then KFP_HOST=http://localhost:8888)"
    )


def _http_problem(t: Target, what: str, status: int, reason: object, body: str) -> str:
    detail = _server_message(body)
    if status == 401:
        hint = (
            "the token was rejected: set KFP_TOKEN to a fresh bearer token"
            if t.token
            else "it needs a token: set KFP_TOKEN (e.g. `gcloud auth print-identity-token` behind "
            "IAP, or your Kubeflow service account token)"
        )
        return f"KFP at {t.host} answered 401 Unauthorized when trying to {what}: {hint}{detail}"
    if status == 403:
        ns = t.namespace or "(none: KFP_NAMESPACE is unset)"
        return (
            f"KFP at {t.host} answered 403 Forbidden when trying to {what}: the token's identity "
            f"may not do this in namespace {ns}; ask for edit access to the profile, or set "
            f"KFP_NAMESPACE to a namespace you can use{detail}"
        )
    if status == 404:
        return (
            f"KFP at {t.host} answered 404 Not Found when trying to {what}: is KFP_HOST the "
            f"Pipelines API root (e.g. https://kubeflow.example.com/pipeline)?{detail}"
        )
    return f"KFP at {t.host} answered {status} {reason} when trying to {what}{detail}"


def _server_message(body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.strip().splitlines()[0][:200] if body.strip() else ""
        return f" (server said: {text})" if text else ""
    if isinstance(doc, dict):
        msg = doc.get("message") or doc.get("error") or ""
        return f" (server said: {str(msg)[:300]})" if msg else ""
    return ""


def _body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace")
    except OSError:
        return ""

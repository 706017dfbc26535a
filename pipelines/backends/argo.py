"""The Argo backend: create the validated Workflow (or CronWorkflow) through the Argo Server.

Talks to the Argo Server's REST API with Hera's :class:`~hera.workflows.WorkflowsService`. The
body of every create or update request is exactly the manifest the CLI validated: Hera would
re-serialise a request through its models (dropping fields equal to a model default), so the
request handed to the service serialises the validated dict as it is.

Settings come from the environment (the Argo CLI's names where it has one):

- ``ARGO_SERVER``: ``https://host:2746`` (``host:2746`` alone means https, unless
  ``ARGO_SECURE=false``); a base path (``https://host/argo``) is kept.
- ``ARGO_TOKEN``: bearer token, with or without the ``Bearer`` prefix.
- ``ARGO_NAMESPACE``: default: the config's ``cluster.namespace``.
- ``ARGO_INSECURE_SKIP_VERIFY``: ``true`` turns TLS verification off (it is on by default).
- ``ARGO_CA_BUNDLE``: a PEM file of the CA that signed the server's certificate.
- ``ARGO_UI_URL``: base of the links printed (default: ``ARGO_SERVER``).
- ``ARGO_REQUEST_TIMEOUT``: seconds per request (default 30).

The token is sent, never printed.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from hera.exceptions import (
    AlreadyExists,
    BadRequest,
    Forbidden,
    HeraException,
    NotFound,
    Unauthorized,
)
from hera.workflows import WorkflowsService
from hera.workflows.models import (
    CreateCronWorkflowRequest,
    UpdateCronWorkflowRequest,
    Workflow,
    WorkflowCreateRequest,
)

from pipelines.backends.argo_status import format_status
from pipelines.config import SweepConfig

PIPELINE_LABEL = "sweepyard.io/pipeline"
DEFAULT_TIMEOUT_S = 30.0
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}

T = TypeVar("T")


class ArgoError(Exception):
    """A submission that did not happen; the message says what to do."""


@dataclass(frozen=True)
class ArgoTarget:
    """Where and how to reach the Argo Server (from the environment, see the module doc)."""

    server: str
    namespace: str
    token: str | None
    verify: bool | str
    ui_url: str
    timeout_s: float

    def link(self, kind: str, name: str) -> str:
        """The Argo UI page of a workflow (``kind="workflows"``) or a cron workflow."""
        return f"{self.ui_url.rstrip('/')}/{kind}/{self.namespace}/{name}"


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise ArgoError(f"{name}={env[name]!r} is not a boolean: use true or false")


def target_from_env(cfg: SweepConfig, env: Mapping[str, str]) -> ArgoTarget:
    """Read the ``ARGO_*`` settings; raises :class:`ArgoError` naming the variable at fault."""
    raw = env.get("ARGO_SERVER", "").strip()
    if not raw:
        raise ArgoError(
            "ARGO_SERVER is not set: point it at the Argo Server, e.g. "
            "ARGO_SERVER=https://localhost:2746 after "
            "`kubectl -n argo port-forward svc/argo-server 2746:2746`"
        )
    if "://" not in raw:
        raw = ("https://" if _flag(env, "ARGO_SECURE", True) else "http://") + raw
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ArgoError(f"ARGO_SERVER={raw!r} is not an http(s) URL like https://host:2746")
    server = raw.rstrip("/") + "/"  # keep a base path (e.g. /argo/) when joining API paths
    token = env.get("ARGO_TOKEN", "").strip() or None
    verify: bool | str = not _flag(env, "ARGO_INSECURE_SKIP_VERIFY", False)
    ca_bundle = env.get("ARGO_CA_BUNDLE", "").strip()
    if ca_bundle and verify:
        if not Path(ca_bundle).is_file():
            raise ArgoError(
                f"ARGO_CA_BUNDLE={ca_bundle!r} is not a file (a PEM file of CA certificates)"
            )
        verify = ca_bundle
    try:
        timeout_s = float(env.get("ARGO_REQUEST_TIMEOUT", "") or DEFAULT_TIMEOUT_S)
    except ValueError:
        raise ArgoError(
            f"ARGO_REQUEST_TIMEOUT={env['ARGO_REQUEST_TIMEOUT']!r} is not a number of seconds"
        ) from None
    return ArgoTarget(
        server=server,
        namespace=env.get("ARGO_NAMESPACE", "").strip() or cfg.cluster.namespace,
        token=token,
        verify=verify,
        ui_url=env.get("ARGO_UI_URL", "").strip() or server,
        timeout_s=timeout_s,
    )


class _TimeoutSession(requests.Session):
    """A session that never waits forever (Hera passes no timeout of its own)."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, *args, **kwargs)


def _service(target: ArgoTarget) -> WorkflowsService:
    return WorkflowsService(
        host=target.server,
        token=target.token,
        verify_ssl=cast(bool, target.verify),  # requests takes a CA bundle path here too
        namespace=target.namespace,
        session=_TimeoutSession(target.timeout_s),
    )


class _ExactBody:
    """A request for :class:`WorkflowsService` whose JSON is exactly ``body`` (see module doc)."""

    def __init__(self, body: Mapping[str, Any]):
        self.body = body

    def json(self, **_: Any) -> str:
        return json.dumps(self.body)


# What _call turns into an ArgoError (anything else is raised as it is).
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)  # SSLError too
_EXPLAINED = (*_UNREACHABLE, HeraException, ValueError)


def _call(
    target: ArgoTarget,
    action: str,
    fn: Callable[[], T],
    allow: tuple[type[Exception], ...] = (),
) -> T:
    """Run one request; turn every failure into an :class:`ArgoError` that says what to do.

    Exceptions of the types in ``allow`` are raised as they are (the caller handles them).
    """
    try:
        return fn()
    except allow:
        raise
    except _EXPLAINED as e:
        raise ArgoError(f"cannot {action}: {_explain(target, e)}") from None


def _explain(target: ArgoTarget, e: Exception) -> str:
    """What went wrong with a request, and what to do about it."""
    where = f"the Argo Server at {target.server}"
    if isinstance(e, _UNREACHABLE):
        return _transport_advice(where, e)
    if isinstance(e, HeraException):
        return _answer_advice(target, where, e)
    # a 2xx answer that is not an Argo object (JSON or model error)
    return (
        f"{where} answered something that is not an Argo object ({e}). "
        "Is ARGO_SERVER the Argo Server (port 2746) and not the UI's proxy or another service?"
    )


def _transport_advice(where: str, e: Exception) -> str:
    """The server could not be reached, or its certificate not verified."""
    if isinstance(e, requests.exceptions.SSLError):
        return (
            f"TLS verification of {where} failed ({_reason(e)}). Give the CA "
            "that signed its certificate with ARGO_CA_BUNDLE=/path/ca.pem, or (on a trusted "
            "network only) set ARGO_INSECURE_SKIP_VERIFY=true"
        )
    return (
        f"{where} is unreachable ({_reason(e)}). Check ARGO_SERVER and "
        "that the server runs, e.g. `kubectl -n argo port-forward svc/argo-server 2746:2746`"
    )


def _answer_advice(target: ArgoTarget, where: str, e: HeraException) -> str:
    """The server answered with an error status."""
    create_token = f"`kubectl -n {target.namespace} create token sweepyard-submitter`"
    if isinstance(e, Unauthorized):
        return f"{where} rejected the credentials (401 Unauthorized: {_msg(e)}). " + (
            f"Set ARGO_TOKEN to a valid bearer token, e.g. {create_token}"
            if target.token is None
            else f"ARGO_TOKEN is expired or invalid: create a new one, e.g. {create_token}"
        )
    if isinstance(e, Forbidden):
        return (
            f"{where} says the token may not do this in namespace "
            f"{target.namespace!r} (403 Forbidden: {_msg(e)}). Bind the token's ServiceAccount "
            "to the sweepyard-submitter Role (deploy/base/rbac.yaml), or set ARGO_NAMESPACE"
        )
    if isinstance(e, AlreadyExists):
        return (
            f"it already exists in namespace {target.namespace!r} on {where} "
            f"(409 Conflict: {_msg(e)}). Delete it or give it another name"
        )
    if isinstance(e, NotFound):
        return (
            f"{where} answered 404 ({_msg(e)}). Check that namespace "
            f"{target.namespace!r} exists and that ARGO_SERVER is the Argo Server's base URL"
        )
    if isinstance(e, BadRequest):
        return f"{where} refused the request (400: {_msg(e)})"
    return f"{where} answered an error ({_msg(e)})"


def _msg(e: Exception) -> str:
    text = str(e)
    return text.removeprefix("Server returned status code ").strip() or type(e).__name__


def _reason(e: Exception) -> str:
    """The innermost cause of a requests error, without the long urllib3 repr."""
    inner: BaseException = e
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    return text if len(text) < 200 else text[:200] + "..."


def with_sweep_id(manifest: Mapping[str, Any], sweep_id: str | None) -> dict[str, Any]:
    """A copy of the manifest whose ``sweep-id`` argument is ``sweep_id`` (when given)."""
    doc = copy.deepcopy(dict(manifest))
    if sweep_id is None:
        return doc
    params = doc.setdefault("spec", {}).setdefault("arguments", {}).setdefault("parameters", [])
    for p in params:
        if p.get("name") == "sweep-id":
            p["value"] = sweep_id
            break
    else:
        params.append({"name": "sweep-id", "value": sweep_id})
    return doc


def _in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc.setdefault("metadata", {})["namespace"] = namespace
    return doc


def _fail(e: ArgoError) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 1


def submit(
    manifest: Mapping[str, Any],
    *,
    cfg: SweepConfig,
    sweep_id: str | None,
    env: Mapping[str, str],
) -> int:
    """Create the validated Workflow; print its name and UI link. 0 on success, 1 otherwise."""
    try:
        target = target_from_env(cfg, env)
        body = _in_namespace(with_sweep_id(manifest, sweep_id), target.namespace)
        with _service(target) as svc:
            request = cast(WorkflowCreateRequest, _ExactBody({"workflow": body}))
            created = _call(target, "create the workflow", lambda: svc.create_workflow(request))
    except ArgoError as e:
        return _fail(e)
    name = created.metadata.name or "?"
    print(f"created workflow {name} in namespace {target.namespace} on {target.server}")
    if sweep_id:
        print(f"  resumes sweep {sweep_id}")
    print(f"  {target.link('workflows', name)}")
    return 0


def schedule(cron_manifest: Mapping[str, Any], *, cfg: SweepConfig, env: Mapping[str, str]) -> int:
    """Create the CronWorkflow, or update it in place when it exists (409 → get → update)."""
    try:
        target = target_from_env(cfg, env)
        body = _in_namespace(copy.deepcopy(dict(cron_manifest)), target.namespace)
        name = body["metadata"].get("name")
        if not name:
            raise ArgoError("the CronWorkflow manifest has no metadata.name")
        with _service(target) as svc:
            create = cast(CreateCronWorkflowRequest, _ExactBody({"cronWorkflow": body}))
            try:
                _call(
                    target,
                    f"create cron workflow {name}",
                    lambda: svc.create_cron_workflow(create),
                    allow=(AlreadyExists,),
                )
                verb = "created"
            except AlreadyExists:
                existing = _call(
                    target, f"read cron workflow {name}", lambda: svc.get_cron_workflow(name)
                )
                body["metadata"]["resourceVersion"] = existing.metadata.resource_version
                update = cast(
                    UpdateCronWorkflowRequest, _ExactBody({"cronWorkflow": body, "name": name})
                )
                _call(
                    target,
                    f"update cron workflow {name}",
                    lambda: svc.update_cron_workflow(name, update),
                )
                verb = "updated"
    except ArgoError as e:
        return _fail(e)
    schedules = body.get("spec", {}).get("schedules") or [body.get("spec", {}).get("schedule")]
    print(
        f"{verb} cron workflow {name} in namespace {target.namespace} on {target.server} "
        f"(schedule {', '.join(str(s) for s in schedules)})"
    )
    print(f"  {target.link('cron-workflows', name)}")
    return 0


def status(*, cfg: SweepConfig, env: Mapping[str, str]) -> int:
    """Print the trials of the newest workflow of the pipeline (label ``sweepyard.io/pipeline``)."""
    try:
        target = target_from_env(cfg, env)
        with _service(target) as svc:
            listed = _call(
                target,
                "list workflows",
                lambda: svc.list_workflows(label_selector=f"{PIPELINE_LABEL}={cfg.name}"),
            )
            items = listed.items or []
            if not items:
                print(
                    f"no workflows of pipeline {cfg.name!r} in namespace {target.namespace} "
                    f"on {target.server}: submit one with `make submit PIPELINE={cfg.name} "
                    "BACKEND=argo`"
                )
                return 0
            newest = max(items, key=_created_at)
            name = newest.metadata.name or ""
            wf = _call(target, f"read workflow {name}", lambda: svc.get_workflow(name))
    except ArgoError as e:
        return _fail(e)
    print(format_status(wf, link=target.link("workflows", name)))
    return 0


def _created_at(wf: Workflow) -> str:
    ts = wf.metadata.creation_timestamp
    return ts.root.isoformat() if ts is not None else ""

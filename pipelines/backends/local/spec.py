"""What the local backend accepts: an explicit allow-list of manifest fields, checked before anything runs.

Every field is either honoured by the local run or a legitimate no-op on one machine (scheduling,
resources, pod metadata, garbage collection). Anything else is an :class:`UnsupportedError` naming
the field's path, so a manifest never runs with part of it silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.argo.expr import ExprError, check_expression
from pipelines.argo.tags import EXPRESSION, Tag, walk_tags
from pipelines.backends.local.artifacts import unsupported_artifacts
from pipelines.backends.local.jobset_policy import resource_problems
from pipelines.backends.local.records import text_of
from pipelines.build.steps import OUTPUTS_DIR
from pipelines.validate.problem import format_path

ANY = "any"  # a no-op subtree (or an opaque value) we do not look into
Spec = Any  # dict[str, Spec] | list[Spec] (one item spec) | ANY

PARAM_ARG = {"name": ANY, "value": ANY, "description": ANY, "enum": ANY, "default": ANY}
ARGUMENTS = {"parameters": [PARAM_ARG]}
ENV = [
    {
        "name": ANY,
        "value": ANY,
        "valueFrom": {"secretKeyRef": {"name": ANY, "key": ANY, "optional": ANY}},
    }
]
VOLUME_MOUNT = [{"name": ANY, "mountPath": ANY, "readOnly": ANY, "subPath": ANY}]
VOLUMES = [
    {
        "name": ANY,
        "persistentVolumeClaim": {"claimName": ANY, "readOnly": ANY},
        "emptyDir": {"medium": ANY, "sizeLimit": ANY},
    }
]
NO_OP_POD = {  # scheduling and pod-level settings: meaningful on a cluster, nothing to do here
    "nodeSelector": ANY,
    "tolerations": ANY,
    "affinity": ANY,
    "serviceAccountName": ANY,
    "automountServiceAccountToken": ANY,
    "priorityClassName": ANY,
    "schedulerName": ANY,
    "securityContext": ANY,
    "imagePullSecrets": ANY,
    "podSpecPatch": ANY,  # read for terminationGracePeriodSeconds
    "metadata": ANY,
    "podMetadata": ANY,
}
CONTAINER = {
    "image": ANY,
    "imagePullPolicy": ANY,
    "command": ANY,
    "args": ANY,
    "env": ENV,
    "volumeMounts": VOLUME_MOUNT,
    "resources": ANY,
    "securityContext": ANY,
    "name": ANY,
}
SCRIPT = {**CONTAINER, "source": ANY}
STEP = {
    "name": ANY,
    "template": ANY,
    "arguments": ARGUMENTS,
    "withItems": ANY,
    "withParam": ANY,
    "withSequence": {"count": ANY, "start": ANY, "end": ANY, "format": ANY},
    "when": ANY,
    "continueOn": {"failed": ANY, "error": ANY},
}
DAG_TASK = {**STEP, "depends": ANY, "dependencies": ANY}
TEMPLATE = {
    **NO_OP_POD,
    "name": ANY,
    "inputs": {"parameters": [PARAM_ARG]},
    "outputs": {
        "parameters": [
            {"name": ANY, "description": ANY, "valueFrom": {"path": ANY, "default": ANY}}
        ],
        # kept in <run dir>/artifacts/ (pipelines/backends/local/artifacts.py)
        "artifacts": [{"name": ANY, "path": ANY, "optional": ANY, "archive": {"none": ANY}}],
    },
    "container": CONTAINER,
    "script": SCRIPT,
    # a JobSet the step creates and watches (pipelines/backends/local/jobset.py checks the rest)
    "resource": {
        "action": ANY,
        "manifest": ANY,
        "setOwnerReference": ANY,
        "successCondition": ANY,
        "failureCondition": ANY,
    },
    "dag": {"tasks": [DAG_TASK]},
    "steps": [[STEP]],
    "retryStrategy": {
        "limit": ANY,
        "retryPolicy": ANY,
        "expression": ANY,
        "backoff": {"duration": ANY, "factor": ANY, "maxDuration": ANY, "cap": ANY},
        "affinity": ANY,
    },
    "parallelism": ANY,
    "activeDeadlineSeconds": ANY,
    "volumes": VOLUMES,
    "archiveLocation": ANY,
}
WORKFLOW = {
    "apiVersion": ANY,
    "kind": ANY,
    "metadata": {
        "name": ANY,
        "generateName": ANY,
        "namespace": ANY,
        "labels": ANY,
        "annotations": ANY,
    },
    "spec": {
        **NO_OP_POD,
        "entrypoint": ANY,
        "onExit": ANY,
        "arguments": ARGUMENTS,
        "templates": [TEMPLATE],
        "parallelism": ANY,
        "activeDeadlineSeconds": ANY,
        "volumes": VOLUMES,
        "podGC": ANY,
        "ttlStrategy": ANY,
        "archiveLogs": ANY,
        "workflowMetadata": ANY,
    },
}


class UnsupportedError(ValueError):
    """A manifest the local backend cannot run faithfully; ``problems`` are ``(path, why)`` pairs."""

    def __init__(
        self,
        problems: list[tuple[str, str]],
        header: str = "the local backend cannot run this workflow",
    ):
        self.problems = problems
        lines = "\n".join(f"  {path}: {why}" for path, why in problems)
        super().__init__(f"{header}:\n{lines}")


def _walk(value: Any, spec: Spec, path: str, problems: list[tuple[str, str]]) -> None:
    if spec == ANY:
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            problems.append((path, f"expected a list, got {type(value).__name__}"))
            return
        for i, item in enumerate(value):
            _walk(item, spec[0], f"{path}[{i}]", problems)
        return
    if not isinstance(value, dict):
        problems.append((path, f"expected a mapping, got {type(value).__name__}"))
        return
    for key, sub in value.items():
        sub_path = f"{path}.{key}" if path else str(key)
        if key not in spec:
            problems.append((sub_path, "field not supported by the local backend"))
        else:
            _walk(sub, spec[key], sub_path, problems)


def check_valid(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`UnsupportedError` with every problem :mod:`pipelines.validate` finds (the
    strict schema and ``argo lint``'s rules), so nothing invalid starts to run."""
    from pipelines.validate import validate_document

    problems = validate_document(dict(manifest))
    if problems:
        raise UnsupportedError(
            [(p.path, p.message) for p in problems], header="not a valid Argo Workflow"
        )


def check_supported(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`UnsupportedError` naming every field (path) the local run would not honour.

    Only what is about running here: the manifest has passed :mod:`pipelines.validate` first
    (names, references, ``depends``, retry policies are its business, checked once there).
    """
    problems: list[tuple[str, str]] = []
    kind = manifest.get("kind", "Workflow")
    if kind != "Workflow":
        problems.append(("kind", f"{kind!r}: only a Workflow runs locally"))
    _walk(dict(manifest), WORKFLOW, "", problems)
    spec = manifest.get("spec") or {}
    for i, t in enumerate(spec.get("templates") or []):
        if isinstance(t, dict):
            path = f"spec.templates[{i}]"
            problems += unsupported_artifacts(t, path, OUTPUTS_DIR)
            if "resource" in t:
                problems += resource_problems(t, f"{path}.resource")
            for j, v in enumerate(t.get("volumes") or []):
                _check_volume(v, f"{path}.volumes[{j}]", problems)
    for j, v in enumerate(spec.get("volumes") or []):
        _check_volume(v, f"spec.volumes[{j}]", problems)
    problems += _expression_problems(spec.get("templates") or [])
    if problems:
        raise UnsupportedError(problems)


def _expression_problems(templates: list[Any]) -> list[tuple[str, str]]:
    """``{{=expression}}`` tags beyond the expr subset evaluated here (Argo evaluates all of
    expr-lang and sprig; the validator, like argo lint, does not look into them)."""
    problems: list[tuple[str, str]] = []
    for where, tag in walk_tags(templates, ("spec", "templates")):
        if isinstance(tag, Tag) and tag.kind == EXPRESSION:
            try:
                check_expression(tag.body, str(tag))
            except ExprError as e:
                problems.append((format_path(where), f"not evaluated locally: {e}"))
    return problems


def _check_volume(v: Mapping[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
    if sum(k in v for k in ("persistentVolumeClaim", "emptyDir")) != 1:
        problems.append((path, "a volume must be a persistentVolumeClaim or an emptyDir"))


def grace_seconds(template: Mapping[str, Any], spec: Mapping[str, Any]) -> float:
    """``terminationGracePeriodSeconds`` from the template's or workflow's ``podSpecPatch`` (k8s: 30)."""
    for owner in (template, spec):
        patch = owner.get("podSpecPatch")
        if not patch:
            continue
        try:
            import yaml

            doc = yaml.safe_load(patch) if isinstance(patch, str) else patch
        except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
            raise ExprError(
                f"podSpecPatch of {template.get('name')!r} is not YAML/JSON: {e}"
            ) from e
        if isinstance(doc, dict) and "terminationGracePeriodSeconds" in doc:
            return float(doc["terminationGracePeriodSeconds"])
    return 30.0


def load_dotenv_values(path: Path | None) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file (python-dotenv); empty when there is none."""
    if path is None or not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def secret_refs(manifest: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(template name, env var name, secretKeyRef)`` for every secret env var of every template."""
    out = []
    for t in (manifest.get("spec") or {}).get("templates") or []:
        body = t.get("container") or t.get("script") or {}
        for e in body.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                out.append((str(t.get("name")), str(e.get("name")), dict(ref)))
    return out


def resolve_secrets(
    manifest: Mapping[str, Any], sources: list[Mapping[str, str]]
) -> dict[str, str]:
    """Values of the secret env vars, looked up by the env var's own name in ``sources`` in order.

    Raises:
        UnsupportedError: a non-optional secret is set nowhere (names the variable and the Secret key).
    """
    values: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for template, env_name, ref in secret_refs(manifest):
        found = next((s[env_name] for s in sources if env_name in s), None)
        if found is not None:
            values[env_name] = found
        elif not ref.get("optional", False):
            problems.append(
                (
                    f"template {template} env {env_name}",
                    f"secret {ref.get('name')}/{ref.get('key')} is required: set {env_name} in the "
                    "environment or in .env",
                )
            )
    if problems:
        raise UnsupportedError(problems)
    return values


def default_parameters(manifest: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """``spec.arguments.parameters`` with ``overrides`` applied; unknown overrides are errors."""
    params: dict[str, str] = {}
    for p in ((manifest.get("spec") or {}).get("arguments") or {}).get("parameters") or []:
        if "value" in p:
            params[p["name"]] = text_of(p["value"])
        elif "default" in p:
            params[p["name"]] = text_of(p["default"])
        else:
            params[p["name"]] = ""
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise UnsupportedError(
            [
                (
                    f"parameter {k}",
                    f"not a workflow parameter (known: {', '.join(params) or 'none'})",
                )
                for k in unknown
            ]
        )
    params.update({k: str(v) for k, v in overrides.items()})
    return params


def deadline_seconds(owner: Mapping[str, Any], where: str) -> float | None:
    """``activeDeadlineSeconds`` as a number (None when absent).

    Whole seconds, not a duration: an integer, or a string Argo reads with ``strconv.Atoi``.
    """
    value = owner.get("activeDeadlineSeconds")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value):
        return float(int(value))
    raise ExprError(f"{where}.activeDeadlineSeconds: {value!r} is not a whole number of seconds")

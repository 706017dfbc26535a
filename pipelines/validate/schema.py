"""Strict structural check of Argo manifests against Argo's published JSON schema.

The schema is Argo Workflows' own (``api/jsonschema/schema.json`` at v4.1.2). It is third-party data
the project reads from ``<repo>/../shared/argo/schema-v4.1.2.json`` at run time (never copied in);
``SWEEPYARD_ARGO_SCHEMA`` points elsewhere. Its known quirks are fixed when it is loaded, so the
check behaves like ``argo lint``'s strict decoding:

- every object definition that lists properties gets ``additionalProperties: false`` (unknown
  fields are errors, as in Go's strict decoding), as do the empty structs (``nodeAntiAffinity: {}``);
- ``IntOrString`` accepts a string or an integer (the schema says string only);
- ``Quantity`` accepts a number (``cpu: 1`` is valid Kubernetes) or a string in Kubernetes'
  quantity grammar (``500m``, ``16Gi``) or holding an Argo variable;
- Argo's ``AnyString`` fields (parameter ``value``, ``default``, ``enum``) accept strings, numbers
  and booleans, as Argo's decoder does.

Each kind is validated against its own definition, so errors name the field, not a ``oneOf``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pipelines.validate.problem import Problem, format_path

SCHEMA_ENV = "SWEEPYARD_ARGO_SCHEMA"
SCHEMA_NAME = "schema-v4.1.2.json"
REPO = Path(__file__).resolve().parents[2]
KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")

_ARGO = "io.argoproj.workflow.v1alpha1."
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_EMPTY_STRUCTS = ("NoneStrategy", "RetryNodeAntiAffinity", "SuppliedValueFrom", "ZipStrategy")
_ANY_STRING = {"type": ["string", "number", "boolean"]}
# Kubernetes' quantity grammar (500m, 4, 16Gi, 1e3), or an Argo variable resolved at run time.
QUANTITY_PATTERN = (
    r"^([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?|.*\{\{.*\}\}.*)$"
)
# Fields that Argo v4 removed: point at their replacement instead of a bare "unknown field".
_REMOVED = {
    "schedule": "Argo v4 removed 'schedule': use 'schedules', a list of 5-field cron expressions",
    "mutex": "Argo v4 removed 'mutex': use 'mutexes', a list",
    "semaphore": "Argo v4 removed 'semaphore': use 'semaphores', a list",
    "podPriority": "Argo v4 removed 'podPriority': use 'podPriorityClassName'",
}


# Kubernetes core/v1 PodSpec's fields (v1.33): Argo's schema has no PodSpec definition.
POD_SPEC_FIELDS = sorted(
    [
        "activeDeadlineSeconds",
        "affinity",
        "automountServiceAccountToken",
        "containers",
        "dnsConfig",
        "dnsPolicy",
        "enableServiceLinks",
        "ephemeralContainers",
        "hostAliases",
        "hostIPC",
        "hostNetwork",
        "hostPID",
        "hostUsers",
        "hostname",
        "hostnameOverride",
        "imagePullSecrets",
        "initContainers",
        "nodeName",
        "nodeSelector",
        "os",
        "overhead",
        "preemptionPolicy",
        "priority",
        "priorityClassName",
        "readinessGates",
        "resourceClaims",
        "resources",
        "restartPolicy",
        "runtimeClassName",
        "schedulerName",
        "schedulingGates",
        "securityContext",
        "serviceAccount",
        "serviceAccountName",
        "setHostnameAsFQDN",
        "shareProcessNamespace",
        "subdomain",
        "terminationGracePeriodSeconds",
        "tolerations",
        "topologySpreadConstraints",
        "volumes",
    ]
)


class SchemaNotFound(RuntimeError):
    """Argo's JSON schema is not where the validator looks for it."""


def schema_path() -> Path:
    """Where Argo's schema is read from: ``$SWEEPYARD_ARGO_SCHEMA``, else ``../shared/argo/``.

    Raises:
        SchemaNotFound: naming every place it looked.
    """
    override = os.environ.get(SCHEMA_ENV)
    if override:
        path = Path(override).expanduser()
        if path.is_file():
            return path
        raise SchemaNotFound(f"{SCHEMA_ENV}={override}: no such file (Argo's JSON schema)")
    candidates = [REPO.parent / "shared" / "argo" / SCHEMA_NAME]
    cwd_candidate = Path.cwd().resolve().parent / "shared" / "argo" / SCHEMA_NAME
    if cwd_candidate not in candidates:
        candidates.append(cwd_candidate)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise SchemaNotFound(
        f"Argo's JSON schema {SCHEMA_NAME} not found (looked in {looked}); "
        f"set {SCHEMA_ENV} to its path"
    )


@functools.lru_cache(maxsize=4)
def _definitions(schema_file: str) -> dict[str, Any]:
    """The schema's definitions with the quirks fixed (see the module's docstring)."""
    with open(schema_file, encoding="utf-8") as f:
        definitions: dict[str, Any] = copy.deepcopy(json.load(f)["definitions"])
    definitions[_INT_OR_STRING] = {"type": ["string", "integer"]}
    definitions[_QUANTITY] = {"type": ["string", "number"], "pattern": QUANTITY_PATTERN}
    for name in _EMPTY_STRUCTS:
        definitions[_ARGO + name]["additionalProperties"] = False
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    for name in ("Parameter", "ValueFrom"):
        props = definitions[_ARGO + name]["properties"]
        props["default"] = dict(_ANY_STRING)
        if name == "Parameter":
            props["value"] = dict(_ANY_STRING)
            props["enum"] = {"type": "array", "items": dict(_ANY_STRING)}
    for definition in definitions.values():
        _inline_refs(definition, definitions)
    return definitions


def _inline_refs(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Replace each ``{"$ref": ...}`` below ``node`` by the definition itself (shared, in place).

    The schema's refs only sit beside descriptions, so this changes no verdict; it halves the time
    a document takes, since the validator no longer looks a reference up at every field. The
    result is cyclic (a template holds steps that hold templates): only the validator walks it.
    """
    if "$ref" in node:
        return definitions[node["$ref"].rsplit("/", 1)[-1]]  # type: ignore[no-any-return]
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                if isinstance(sub, dict):
                    value[name] = _inline_refs(sub, definitions)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            node[key] = _inline_refs(value, definitions)
    return node


@functools.lru_cache(maxsize=16)
def _validator(schema_file: str, kind: str) -> Draft202012Validator:
    return Draft202012Validator(_definitions(schema_file)[_ARGO + kind])


@functools.lru_cache(maxsize=4)
def _definition_names(schema_file: str) -> dict[int, str]:
    return {id(d): name.rsplit(".", 1)[-1] for name, d in _definitions(schema_file).items()}


def structural_problems(doc: dict[str, Any], kind: str) -> list[Problem]:
    """Every place ``doc`` departs from the (fixed) schema of ``kind``; [] when it conforms.

    Raises:
        SchemaNotFound: when the schema cannot be found.
    """
    schema_file = str(schema_path())
    validator = _validator(schema_file, kind)
    names = _definition_names(schema_file)
    problems: list[Problem] = []
    for error in validator.iter_errors(doc):
        for p in _translate(error, names):
            if p not in problems:
                problems.append(p)
    return problems


def _translate(error: ValidationError, names: dict[int, str]) -> list[Problem]:
    path = list(error.absolute_path)
    where = names.get(id(error.schema))
    within = f" in {where}" if where else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        return [
            Problem(format_path([*path, key]), _unknown_field(key, known, within))
            for key in error.instance
            if key not in known
        ]
    if error.validator == "required" and isinstance(error.instance, dict):
        return [
            Problem(format_path([*path, key]), f"required field is missing{within}")
            for key in error.validator_value
            if key not in error.instance
        ]
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        got = _json_type(error.instance)
        shown = _short(error.instance)
        message = f"expected {expected}, got {got}" + (f" {shown}" if shown else "")
        return [Problem(format_path(path), message)]
    if error.validator == "pattern" and error.validator_value == QUANTITY_PATTERN:
        return [
            Problem(
                format_path(path),
                f"{_short(error.instance)} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)",
            )
        ]
    if error.validator == "const":
        return [
            Problem(
                format_path(path),
                f"must be {error.validator_value!r}, got {_short(error.instance)}",
            )
        ]
    return [Problem(format_path(path), error.message)]


def _unknown_field(key: str, known: list[str], within: str) -> str:
    message = f"unknown field {key!r}{within}"
    if key in _REMOVED:
        return f"{message}: {_REMOVED[key]}"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return message


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    """A scalar as JSON, cut short; nothing for objects and arrays (they may hold secrets)."""
    if isinstance(value, (dict, list)):
        return ""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


def pod_spec_patch_problems(patch: str, path: tuple[str | int, ...]) -> list[Problem]:
    """A ``podSpecPatch`` must be a YAML/JSON object whose keys are PodSpec fields.

    ``{{...}}`` variables are replaced by a placeholder first (they are resolved at run time).
    """
    text = re.sub(r"\{\{.*?\}\}", "x", patch, flags=re.DOTALL)
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem", None) or "not valid YAML or JSON"
        return [Problem(format_path(path), f"podSpecPatch is not valid YAML or JSON: {mark}")]
    if isinstance(parsed, str) and text.strip() == "x":
        return []  # the whole patch is one variable
    if not isinstance(parsed, dict):
        return [Problem(format_path(path), "podSpecPatch must be an object (a partial PodSpec)")]
    problems = [
        Problem(format_path(path), _unknown_field(str(key), POD_SPEC_FIELDS, " in podSpecPatch"))
        for key in parsed
        if key not in POD_SPEC_FIELDS
    ]
    grace = parsed.get("terminationGracePeriodSeconds")
    if grace is not None and grace != "x" and (not isinstance(grace, int) or grace < 0):
        problems.append(
            Problem(
                format_path(path),
                f"podSpecPatch terminationGracePeriodSeconds must be a non-negative integer, "
                f"got {_short(grace)}",
            )
        )
    return problems

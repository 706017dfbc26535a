"""Strict offline validation of custom resources (JobSet, Kueue, Kubeflow Trainer) against their
upstream CustomResourceDefinitions.

The CRDs are third-party data the project reads from ``<repo>/../shared/crds/`` at run time (never
copied in; ``.ci/reference-data.sh`` fetches them at pinned tags: JobSet v0.12.0, Kueue v0.19.2,
Trainer v2.3.0); ``SWEEPYARD_CRDS`` points elsewhere. An object is checked against
``spec.versions[name == its apiVersion's version, served].schema.openAPIV3Schema``, made strict
the way the API server treats a structural schema, except that what it would prune is an error here:

- an object that lists ``properties`` rejects any other field (``additionalProperties: false``)
  unless it carries ``x-kubernetes-preserve-unknown-fields`` (or ``x-kubernetes-embedded-resource``
  with no properties);
- ``x-kubernetes-int-or-string`` accepts an integer or a string; ``nullable`` accepts null;
- ``metadata`` (``type: object`` in every CRD: the API server checks it) gets ObjectMeta's fields.

What the API server checks beyond the schema (CEL ``x-kubernetes-validations``, webhooks) is not
checked here. ``{{...}}`` tags in string fields are taken as they are (an integer field must hold a
literal integer, as Argo does not turn a substituted string into a number in a manifest's YAML).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from pipelines.validate.problem import Path as FieldPath
from pipelines.validate.problem import Problem, format_path
from pipelines.validate.schema import REPO, SchemaNotFound, _translate

CRDS_ENV = "SWEEPYARD_CRDS"
# apiVersion group -> the CRD files of that group in ../shared/crds (one kind each)
GROUPS = ("jobset.x-k8s.io", "kueue.x-k8s.io", "trainer.kubeflow.org")
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _LABELS,
        "annotations": _LABELS,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}


def crds_dir() -> Path:
    """Where the CRDs are read from: ``$SWEEPYARD_CRDS``, else ``../shared/crds`` beside the checkout
    (or beside the working directory's parent, as Argo's schema is found).

    Raises:
        SchemaNotFound: naming every place it looked.
    """
    override = os.environ.get(CRDS_ENV)
    if override:
        path = Path(override).expanduser()
        if path.is_dir():
            return path
        raise SchemaNotFound(f"{CRDS_ENV}={override}: no such folder (the upstream CRDs)")
    candidates = [REPO.parent / "shared" / "crds"]
    cwd_candidate = Path.cwd().resolve().parent / "shared" / "crds"
    if cwd_candidate not in candidates:
        candidates.append(cwd_candidate)
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise SchemaNotFound(
        f"the upstream CRDs (JobSet, Kueue, Trainer) not found (looked in {looked}); run "
        f".ci/reference-data.sh or set {CRDS_ENV} to their folder"
    )


def is_custom_resource(doc: Any) -> bool:
    """Whether ``doc`` is an object of one of the API groups whose CRDs are checked here."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("apiVersion"), str)
        and doc["apiVersion"].split("/", 1)[0] in GROUPS
    )


@functools.lru_cache(maxsize=4)
def _crds(folder: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> CRD, for every ``*.yaml`` CRD in the folder."""
    out = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    spec = doc["spec"]
                    out[(spec["group"], spec["names"]["kind"])] = doc
    return out


@functools.lru_cache(maxsize=32)
def _validator(folder: str, group: str, kind: str, version: str) -> Draft202012Validator | str:
    """The strict validator of one served version, or why there is none."""
    crd = _crds(folder).get((group, kind))
    if crd is None:
        known = sorted(k for g, k in _crds(folder) if g == group)
        return f"unknown kind {kind!r} in {group} (the CRDs know: {', '.join(known) or 'none'})"
    versions = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in versions:
        return (
            f"{group}/{version} is not served by the {kind} CRD "
            f"(served: {', '.join(f'{group}/{v}' for v in versions)})"
        )
    schema = strict(versions[version]["schema"]["openAPIV3Schema"])
    schema.setdefault("properties", {})["metadata"] = OBJECT_META
    return Draft202012Validator(schema)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CRD's OpenAPI v3 schema as a strict JSON schema (see the module's docstring)."""
    return _strict(copy.deepcopy(schema))


def _strict(node: dict[str, Any]) -> dict[str, Any]:
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("x-kubernetes-int-or-string") is True:
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource") is True:
        props = node.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", OBJECT_META)
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if "properties" in node:
        for value in node["properties"].values():
            _strict(value)
        if not preserve and "additionalProperties" not in node:
            node["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _strict(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in node.get(key, []):
            _strict(sub)
    return node


def object_problems(doc: dict[str, Any], path: FieldPath = ()) -> list[Problem]:
    """Every place a custom resource departs from its CRD's schema; [] when it conforms.

    ``path`` is where the object sits in a larger document (its problems' paths start there).

    Raises:
        SchemaNotFound: when the CRDs' folder cannot be found.
    """
    api, kind = doc.get("apiVersion", ""), doc.get("kind")
    group, _, version = api.partition("/")
    if not isinstance(kind, str) or not kind:
        return [Problem(format_path((*path, "kind")), "required field is missing")]
    validator = _validator(str(crds_dir()), group, kind, version)
    if isinstance(validator, str):
        return [Problem(format_path((*path, "apiVersion")), validator)]
    problems: list[Problem] = []
    for error in validator.iter_errors(doc):
        error.path.extendleft(reversed(path))  # where the object sits in the document
        for p in _translate(error, {}):
            found = Problem(p.path, f"{p.message} ({kind} {api})")
            if found not in problems:
                problems.append(found)
    return problems


# A tag that stands as a whole YAML scalar (``name: {{inputs.parameters.x}}``, ``- {{=toJson(...)}}``):
# Argo substitutes its value there (toJson: a JSON string literal), but before that it is a flow
# mapping to YAML, or no YAML at all.
_TAG_SCALAR = re.compile(r"^(\s*(?:-\s+|[^\s#:][^:\n]*:\s+))(\{\{.*\}\})[ \t]*$", re.MULTILINE)
_CHECKED_API = re.compile(
    r"^apiVersion:\s*[\"']?(" + "|".join(re.escape(g) for g in GROUPS) + r")/", re.MULTILINE
)


def parse_manifest(text: str) -> Any:
    """A resource template's manifest as data, its tags in place (a tag standing as a whole scalar
    is read as the text of the tag).

    Raises:
        yaml.YAMLError: not YAML even so.
    """
    quoted = _TAG_SCALAR.sub(lambda m: m.group(1) + json.dumps(m.group(2)), text)
    return yaml.safe_load(quoted)


def resource_template_problems(spec: dict[str, Any], spec_path: FieldPath) -> list[Problem]:
    """The problems of every resource template's manifest of a JobSet/Kueue/Trainer kind."""
    problems: list[Problem] = []
    for i, template in enumerate(spec.get("templates") or []):
        manifest = (template.get("resource") or {}).get("manifest")
        if not isinstance(manifest, str):
            continue
        path = (*spec_path, "templates", i, "resource", "manifest")
        try:
            doc = parse_manifest(manifest)
        except yaml.YAMLError as e:
            if _CHECKED_API.search(manifest):  # other kinds are not this layer's to judge
                problems.append(Problem(format_path(path), f"not valid YAML: {e}"))
            continue
        if is_custom_resource(doc):
            problems += object_problems(doc, path)
    return problems

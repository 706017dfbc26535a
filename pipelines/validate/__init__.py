"""Offline validation of Argo manifests: a strict schema check, then ``argo lint``'s main rules.

Run before every submit and compile (``validate_or_raise``) and as
``python -m pipelines validate FILE...`` (``main``): exit 0 when every file is valid, 1 with one
``FILE: FIELD: message`` line per problem on stdout, 2 when a file cannot be read or parsed (or
Argo's schema cannot be found), with the reason on stderr.

Two layers, in order (the lint runs only on a document the schema accepts, as ``argo lint`` only
lints what it could decode):

1. :mod:`pipelines.validate.schema`: Argo's JSON schema, strict (unknown fields are errors).
2. :mod:`pipelines.validate.lint`: names, entrypoint/onExit/hook/template references, DAG
   ``depends`` (tasks exist, no cycle), loops, retry policies, ``{{...}}`` references, and
   CronWorkflow schedules (standard 5-field cron).
3. :mod:`pipelines.validate.crds`: a resource template's manifest of a JobSet, Kueue or Kubeflow
   Trainer kind, against that kind's upstream CRD (strict; its ``{{...}}`` tags in place).

Kinds: Workflow, WorkflowTemplate, ClusterWorkflowTemplate, CronWorkflow. A top-level ``status`` is
ignored: the controller writes it and the API server drops it on create. Objects of other API
groups in the same file (a PersistentVolumeClaim, say) are skipped, and so is a compiled Kubeflow
Pipelines package (``pipelines/compiled/*.kfp.yaml``), with a note on stderr. Given a set of files,
``main`` skips a file that holds no Argo document (as ``argo lint`` does), but a set with no Argo
document at all is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.validate.crds import resource_template_problems
from pipelines.validate.lint import lint_document
from pipelines.validate.problem import Problem
from pipelines.validate.schema import KINDS, SchemaNotFound, structural_problems

__all__ = [
    "KINDS",
    "ManifestInvalid",
    "ManifestUnreadable",
    "Problem",
    "SchemaNotFound",
    "is_kfp_package",
    "load_documents",
    "main",
    "validate_document",
    "validate_file",
    "validate_or_raise",
]

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe YAML as Kubernetes reads it: timestamps stay strings (the last of duplicate keys wins)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class ManifestUnreadable(Exception):
    """A manifest file that cannot be read, or is not YAML."""


class ManifestInvalid(ValueError):
    """A manifest with problems; ``problems`` lists them all, the message shows them one a line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: invalid Argo manifest, {count}:\n{lines}")


def validate_document(doc: Any) -> list[Problem]:
    """Every problem of one manifest (a parsed YAML/JSON document); [] when it is valid.

    Raises:
        SchemaNotFound: when Argo's JSON schema cannot be found.
    """
    if not isinstance(doc, dict):
        return [Problem("(root)", f"a manifest must be a mapping, got {type(doc).__name__}")]
    kind = doc.get("kind")
    if kind is None:
        return [Problem("kind", f"missing: not an Argo manifest? (one of {', '.join(KINDS)})")]
    if kind not in KINDS:
        return [Problem("kind", f"unsupported kind {kind!r}: one of {', '.join(KINDS)}")]
    doc = {key: value for key, value in doc.items() if key != "status"}
    problems = structural_problems(doc, kind)
    if problems:
        return problems
    spec_path = ("spec", "workflowSpec") if kind == "CronWorkflow" else ("spec",)
    spec = doc["spec"].get("workflowSpec", {}) if kind == "CronWorkflow" else doc["spec"]
    return lint_document(doc, kind) + resource_template_problems(spec, spec_path)


def validate_or_raise(doc: dict[str, Any], source: str) -> None:
    """Raise :class:`ManifestInvalid` (naming ``source`` and every problem) unless ``doc`` is valid."""
    problems = validate_document(doc)
    if problems:
        raise ManifestInvalid(source, problems)


def load_documents(path: str | Path) -> list[Any]:
    """The YAML documents of a file, in order (empty documents included, as ``None``).

    Raises:
        ManifestUnreadable: the file cannot be read or is not valid YAML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestUnreadable(f"cannot read: {e}") from e
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        raise ManifestUnreadable(f"not valid YAML: {e}") from e


def _is_argo(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return doc is not None
    api = str(doc.get("apiVersion", ""))
    return api.startswith("argoproj.io/") or doc.get("kind") in KINDS or not api


def is_kfp_package(docs: Sequence[Any]) -> bool:
    """Whether the documents are a compiled Kubeflow Pipelines package (not an Argo manifest)."""
    present = [d for d in docs if d is not None]
    return (
        bool(present)
        and all(isinstance(d, dict) and "kind" not in d and "apiVersion" not in d for d in present)
        and "pipelineInfo" in present[0]
        and "deploymentSpec" in present[0]
    )


def validate_file(path: str | Path) -> list[str]:
    """One ``FILE: FIELD: message`` line per problem of every Argo document in the file.

    In a file of several documents, FIELD starts with ``doc[i].`` (i counts from 0). A compiled
    Kubeflow Pipelines package (``pipelines/compiled/*.kfp.yaml``) has no Argo document and no
    problem here: the KFP tests check it.

    Raises:
        ManifestUnreadable: the file cannot be read or is not valid YAML.
        SchemaNotFound: when Argo's JSON schema cannot be found.
    """
    return _validate_documents(path, load_documents(path))


def _validate_documents(path: str | Path, docs: list[Any]) -> list[str]:
    if is_kfp_package(docs):
        return []
    argo = [(i, doc) for i, doc in enumerate(docs) if _is_argo(doc)]
    if not argo:
        return [f"{path}: (root): no {', '.join(KINDS)} document in this file"]
    several = len([d for d in docs if d is not None]) > 1
    lines = []
    for i, doc in argo:
        for p in validate_document(doc):
            field = f"doc[{i}].{p.path}" if several else p.path
            lines.append(f"{path}: {field}: {p.message}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines validate FILE...``: 0 all valid, 1 problems, 2 unreadable."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines validate",
        description="Validate Argo manifests offline: strict schema plus argo lint's rules.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML manifest files")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    status, problems, bad_files, skipped = 0, 0, 0, 0
    foreign: list[str] = []  # files with no Argo document (a PersistentVolumeClaim, say)
    for name in args.files:
        try:
            docs = load_documents(name)
            if is_kfp_package(docs):
                print(f"{name}: skipped, a Kubeflow Pipelines package", file=sys.stderr)
                skipped += 1
            elif not any(_is_argo(doc) for doc in docs):
                # as `argo lint` given a set of files: documents of other kinds are skipped
                foreign.append(name)
                skipped += 1
                continue
            lines = _validate_documents(name, docs)
        except ManifestUnreadable as e:
            print(f"{name}: {e}", file=sys.stderr)
            status = 2
            continue
        except SchemaNotFound as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for line in lines:
            print(line)
        if lines:
            problems += len(lines)
            bad_files += 1
            status = max(status, 1)
    total = len(args.files)
    if foreign and len(foreign) == total:
        # a set with no Argo document at all is a mistake (the wrong files)
        for name in foreign:
            print(f"{name}: (root): no {', '.join(KINDS)} document in this file")
        problems, bad_files, status = problems + len(foreign), len(foreign), max(status, 1)
    elif foreign:
        for name in foreign:
            print(f"{name}: skipped, no Argo document", file=sys.stderr)
    if status == 0:
        valid = total - skipped
        print(f"{valid} file{'s' if valid != 1 else ''} valid", file=sys.stderr)
    elif problems:
        print(f"{problems} problem(s) in {bad_files} of {total} file(s)", file=sys.stderr)
    return status

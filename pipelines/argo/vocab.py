"""Argo's vocabulary, defined once: task results, node phases, retry policies, template kinds, loops.

Each name below is Argo's own (``pkg/apis/workflow/v1alpha1`` and ``workflow/common/ancestry.go``);
the validator checks manifests against them and the local runner acts on them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

# workflow/common/ancestry.go: the TaskResult constants a ``depends`` expression may name.
TASK_RESULTS = (
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Omitted",
    "Daemoned",
    "AnySucceeded",
    "AllFailed",
)
# The results that read a task group's children (the task must loop).
ITEMS_RESULTS = ("AnySucceeded", "AllFailed")

# Node phases (NodePhase) a node ends in, and those that count as failures.
DONE = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")
FAILED = ("Failed", "Error")

# retryStrategy.retryPolicy (RetryPolicy); Argo's default is OnFailure.
RETRY_POLICIES = ("Always", "OnFailure", "OnError", "OnTransientError")
DEFAULT_RETRY_POLICY = "OnFailure"

# A template's kind is the one of these fields it sets (TemplateType), in Argo's order of checking.
TEMPLATE_KINDS = (
    "container",
    "containerSet",
    "steps",
    "script",
    "resource",
    "dag",
    "suspend",
    "data",
    "http",
    "plugin",
)
LOOP_FIELDS = ("withItems", "withParam", "withSequence")


def template_kind(template: Mapping[str, Any]) -> str:
    """The kind of a template (``""`` when it sets none)."""
    return next((kind for kind in TEMPLATE_KINDS if kind in template), "")


def has_loop(holder: Mapping[str, Any]) -> bool:
    """Whether a task or step fans out (withItems, withParam or withSequence)."""
    return any(holder.get(f) not in (None, "", []) for f in LOOP_FIELDS)


def task_results(phase: str, children: Collection[str] | None = None) -> set[str]:
    """The TaskResults that hold for a finished node (``children``: a task group's child phases).

    Mirrors ``evaluateDependsLogic`` in Argo's ``workflow/controller/dag.go``: ``Errored`` is the
    phase ``Error``; ``AnySucceeded``/``AllFailed`` read the children of a task group (AllFailed
    needs at least one child). Daemoned steps do not run locally, so ``Daemoned`` never holds here.
    """
    results = {
        result
        for result, wanted in (
            ("Succeeded", "Succeeded"),
            ("Failed", "Failed"),
            ("Errored", "Error"),
            ("Skipped", "Skipped"),
            ("Omitted", "Omitted"),
        )
        if phase == wanted
    }
    if children is not None:
        if any(p == "Succeeded" for p in children):
            results.add("AnySucceeded")
        if children and all(p == "Failed" for p in children):
            results.add("AllFailed")
    return results


def plain_dependency_results(continue_on: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What a bare task name in ``depends`` (or an entry of ``dependencies``) means.

    Argo's ``expandDependency`` (``workflow/common/ancestry.go``): ``A`` is
    ``(A.Succeeded || A.Skipped || A.Daemoned)``, plus ``A.Errored`` / ``A.Failed`` when the
    task ``A`` has ``continueOn.error`` / ``continueOn.failed``.
    """
    results = ["Succeeded", "Skipped", "Daemoned"]
    if continue_on and continue_on.get("error"):
        results.append("Errored")
    if continue_on and continue_on.get("failed"):
        results.append("Failed")
    return tuple(results)

"""Argo's vocabulary, defined once: task results, node phases, retry policies, template kinds, loops.

Each name below is Argo's own (``pkg/apis/workflow/v1alpha1`` and ``workflow/common/ancestry.go``);
the validator checks manifests against them and the local runner acts on them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any


class TaskResult(StrEnum):
    """``workflow/common/ancestry.go``: the TaskResult constants a ``depends`` expression may name."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERRORED = "Errored"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"
    DAEMONED = "Daemoned"
    ANY_SUCCEEDED = "AnySucceeded"
    ALL_FAILED = "AllFailed"


class NodePhase(StrEnum):
    """``NodePhase``: where a node of a workflow is (a str, so it compares with a manifest's text)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"
    OMITTED = "Omitted"


class RetryPolicy(StrEnum):
    """``retryStrategy.retryPolicy`` (RetryPolicy); Argo's default is ``OnFailure``."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    ON_ERROR = "OnError"
    ON_TRANSIENT_ERROR = "OnTransientError"


TASK_RESULTS = tuple(r.value for r in TaskResult)
# The results that read a task group's children (the task must loop).
ITEMS_RESULTS = (TaskResult.ANY_SUCCEEDED.value, TaskResult.ALL_FAILED.value)

# Node phases a node ends in, and those that count as failures.
DONE = (
    NodePhase.SUCCEEDED,
    NodePhase.FAILED,
    NodePhase.ERROR,
    NodePhase.SKIPPED,
    NodePhase.OMITTED,
)
FAILED = (NodePhase.FAILED, NodePhase.ERROR)

RETRY_POLICIES = tuple(p.value for p in RetryPolicy)
DEFAULT_RETRY_POLICY = RetryPolicy.ON_FAILURE

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
    results: set[str] = {
        result
        for result, wanted in (
            (TaskResult.SUCCEEDED, NodePhase.SUCCEEDED),
            (TaskResult.FAILED, NodePhase.FAILED),
            (TaskResult.ERRORED, NodePhase.ERROR),
            (TaskResult.SKIPPED, NodePhase.SKIPPED),
            (TaskResult.OMITTED, NodePhase.OMITTED),
        )
        if phase == wanted
    }
    if children is not None:
        if any(p == NodePhase.SUCCEEDED for p in children):
            results.add(TaskResult.ANY_SUCCEEDED)
        if children and all(p == NodePhase.FAILED for p in children):
            results.add(TaskResult.ALL_FAILED)
    return results


def plain_dependency_results(continue_on: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What a bare task name in ``depends`` (or an entry of ``dependencies``) means.

    Argo's ``expandDependency`` (``workflow/common/ancestry.go``): ``A`` is
    ``(A.Succeeded || A.Skipped || A.Daemoned)``, plus ``A.Errored`` / ``A.Failed`` when the
    task ``A`` has ``continueOn.error`` / ``continueOn.failed``.
    """
    results: list[str] = [TaskResult.SUCCEEDED, TaskResult.SKIPPED, TaskResult.DAEMONED]
    if continue_on and continue_on.get("error"):
        results.append(TaskResult.ERRORED)
    if continue_on and continue_on.get("failed"):
        results.append(TaskResult.FAILED)
    return tuple(results)

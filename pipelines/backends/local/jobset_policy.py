"""What a JobSet may be here, and what a failed pod of it leads to, as Kubernetes and JobSet
decide it (pure functions).

:func:`resource_problems` is the check before anything runs: locally a ``resource`` template
creates a JobSet and waits for its terminal state, nothing else.

The Job controller turns a failed pod into the Job's failure through the Job's
``podFailurePolicy`` (reason ``PodFailurePolicy`` and a message worded as
kubernetes ``pkg/controller/job/pod_failure_policy.go`` words it, or ``BackoffLimitExceeded``);
JobSet's ``failurePolicy.rules`` then pick the action for that Job failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.backends.local.pod import Attempt, PodSpec

BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
# the conditions a sweep's resource template watches (status.terminalState is a plain string)
JOBSET_CONDITIONS = {
    "successCondition": "status.terminalState == Completed",
    "failureCondition": "status.terminalState == Failed",
}


@dataclass
class GangPod:
    """One pod of the JobSet: ``namespace/name``, its Job, completion index and what it runs."""

    host: str
    job: str
    index: int
    spec: PodSpec
    attempt: Attempt
    container: str
    policy: list[Mapping[str, Any]]  # the Job's podFailurePolicy.rules


@dataclass
class JobFailure:
    """Why a Job of the set failed, as the Job controller records it (reason, message)."""

    reason: str
    message: str
    pod: GangPod


def job_failure(pod: GangPod) -> JobFailure:
    """The Job's failure for this failed pod, worded as the Job controller words it
    (kubernetes ``pkg/controller/job/pod_failure_policy.go``)."""
    conditions = {"DisruptionTarget"} if pod.attempt.preempted else set()
    code = pod.attempt.exit_code
    pod_ref = pod.host  # namespace/name
    for i, rule in enumerate(pod.policy):
        action = rule.get("action")
        on_codes = rule.get("onExitCodes")
        if on_codes and code is not None:
            name = on_codes.get("containerName")
            values = [int(v) for v in on_codes.get("values") or []]
            hit = code in values if on_codes.get("operator") == "In" else code not in values
            if (not name or name == pod.container) and hit and code != 0:
                if action == "FailJob":
                    return JobFailure(
                        "PodFailurePolicy",
                        f"Container {pod.container} for pod {pod_ref} failed with exit code "
                        f"{code} matching {action} rule at index {i}",
                        pod,
                    )
                break
        for cond in rule.get("onPodConditions") or []:
            if cond.get("type") in conditions and str(cond.get("status", "True")) == "True":
                if action == "FailJob":
                    return JobFailure(
                        "PodFailurePolicy",
                        f"Pod {pod_ref} has condition {cond['type']} matching {action} rule "
                        f"at index {i}",
                        pod,
                    )
                break
    return JobFailure("BackoffLimitExceeded", BACKOFF_MESSAGE, pod)


def failure_action(policy: Mapping[str, Any] | None, failure: JobFailure) -> tuple[str, str]:
    """``(action, rule name)`` of the JobSet's failure policy for a Job failure (JobSet: the first
    matching rule; none matches: ``RestartJobSet``; no policy at all: ``FailJobSet``)."""
    if policy is None:
        return "FailJobSet", ""
    for i, rule in enumerate(policy.get("rules") or []):
        reasons = rule.get("onJobFailureReasons") or []
        patterns = rule.get("onJobFailureMessagePatterns") or []
        if reasons and failure.reason not in reasons:
            continue
        if patterns and not any(re.search(p, failure.message) for p in patterns):
            continue
        action = str(rule.get("action"))
        if action.startswith("RestartJob") and not action.startswith("RestartJobSet"):
            action = action.replace("RestartJob", "RestartJobSet")  # one Job per gang here
        return action, str(rule.get("name") or f"failurePolicyRule{i}")
    return "RestartJobSet", ""


def resource_problems(t: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """Why a ``resource`` template cannot run here (checked before anything runs): locally a
    resource template creates a JobSet and waits for its terminal state, nothing else."""
    from pipelines.validate.crds import parse_manifest

    res = t.get("resource") or {}
    why = []
    if res.get("action") != "create":
        why.append(f"action {res.get('action')!r}: only create runs locally")
    for key, expected in JOBSET_CONDITIONS.items():
        if res.get(key) != expected:
            why.append(f"{key} must be {expected!r} locally")
    try:
        doc = parse_manifest(str(res.get("manifest") or ""))
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict) or (doc.get("apiVersion"), doc.get("kind")) != (
        JOBSET_API,
        "JobSet",
    ):
        kind = f"{doc.get('apiVersion')} {doc.get('kind')}" if isinstance(doc, dict) else "not YAML"
        why.append(f"only a {JOBSET_API} JobSet runs locally (this manifest: {kind})")
    return [(path, "; ".join(why))] if why else []

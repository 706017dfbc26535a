"""A trial bigger than one node: a JobSet (``jobset.x-k8s.io/v1alpha2``) the train step creates.

With ``resources.nodes: M > 1`` the ``train`` template is an Argo ``resource`` template that creates
one JobSet per trial, owned by the workflow (deleted with it), and waits for its terminal state::

    JobSet <workflow name>-<trial id>     (queue label: Kueue admits all M pods at once, or none)
      replicatedJobs: node (1 Job, Indexed, M completions; pod i = node rank i)
        pod: the train container, as the single-node step's (args + --nnodes M --nproc-per-node N)

Failure budgets live in the JobSet, not in Argo (the resource template has no ``retryStrategy``:
an Argo retry would create a second JobSet beside the restarted one):

* each Job fails at its first failed pod (``backoffLimit: 0``), with reason ``PodFailurePolicy``
  when a pod was disrupted (``DisruptionTarget``: spot preemption, eviction) or gave up (exit 3);
* ``Preempted``: a disrupted pod, or a pod that exited 143 (stopped with its gang after a SIGTERM,
  state saved), restarts the whole gang without spending ``maxRestarts`` (the trial resumes from
  its last complete checkpoint);
* ``GiveUp``: exit 3 fails the JobSet at once (never retried, as on the single-node path);
* any other failure (an application error) restarts the gang, at most ``retries.app_errors`` times.

The rules match the messages Kubernetes' Job controller writes on the Job's ``Failed`` condition
(kubernetes/kubernetes ``pkg/controller/job/pod_failure_policy.go``, ``matchPodFailurePolicy``)::

    "Pod %s/%s has condition %v matching %v rule at index %d"
    "Container %s for pod %s/%s failed with exit code %v matching %v rule at index %d"

and JobSet matches ``onJobFailureMessagePatterns`` (RE2) against that message and
``onJobFailureReasons`` against the condition's reason (JobSet v0.12.0 ``FailurePolicyRule``).

Pure: :func:`jobset_manifest` builds the object from the pieces the single-node step is built from
(:mod:`pipelines.build.argo` passes them), :func:`manifest_text` renders it with Argo's tags in place.
"""

from __future__ import annotations

from typing import Any

import yaml
from hera.workflows import Parameter, Resource

from components.contract import EXIT_GIVE_UP, EXIT_PREEMPTED
from pipelines.build import steps
from pipelines.config import SweepConfig

API_VERSION = "jobset.x-k8s.io/v1alpha2"
KIND = "JobSet"
REPLICATED_JOB = "node"
CONTAINER = "train"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PIPELINE_LABEL = "sweepyard.io/pipeline"
TRIAL_LABEL = "sweepyard.io/trial"
# Deterministic and unique per workflow and trial; SweepConfig's check_nodes keeps it within
# JobSet's length limit (pipelines.config.distributed.JOBSET_NAME_MAX) and starting with a letter (DNS-1035).
NAME = "{{workflow.name}}-{{inputs.parameters.trial-id}}"
# The params are JSON (quotes): a bare {{inputs.parameters.params}} inside the YAML manifest would
# break it. Argo's expression tag toJson(...) yields a JSON string literal, which is a valid YAML
# double-quoted scalar; it stands alone as the args item (see manifest_text).
PARAMS_TAG = "{{=toJson(inputs.parameters.params)}}"
_PARAMS_SENTINEL = "__sweepyard_params_json__"
# JobSet's restart counter, on every pod it creates: the trial's attempt (as {{retries}} on Argo)
RESTART_ANNOTATION = "jobset.sigs.k8s.io/restart-attempt"
# The Job's Failed-condition messages of the two podFailurePolicy rules below (index 0 and 1),
# as kubernetes/kubernetes pkg/controller/job/pod_failure_policy.go formats them.
PREEMPTED_PATTERN = (
    r"^Pod [^/ ]+/[^ ]+ has condition DisruptionTarget matching FailJob rule at index 0$"
)
GIVE_UP_PATTERN = (
    rf"^Container {CONTAINER} for pod [^/ ]+/[^ ]+ failed with exit code {EXIT_GIVE_UP} "
    r"matching FailJob rule at index 1$"
)
# A node's SIGTERM (spot shutdown) stops every rank at the same step, so the pods of the nodes
# that were not preempted exit 143 too, without the DisruptionTarget condition: whichever pod
# the Job controller sees first must not turn a preemption into a counted restart.
STOPPED_PATTERN = (
    rf"^Container {CONTAINER} for pod [^/ ]+/[^ ]+ failed with exit code {EXIT_PREEMPTED} "
    r"matching FailJob rule at index 2$"
)
POD_FAILURE_REASON = "PodFailurePolicy"  # the Job's Failed reason when a FailJob rule matched
SUCCESS_CONDITION = "status.terminalState == Completed"
FAILURE_CONDITION = "status.terminalState == Failed"


def master_addr(name: str = NAME) -> str:
    """The DNS name of node rank 0: ``<jobset>-<replicatedJob>-<job index>-<pod index>.<subdomain>``
    (JobSet's ``network.enableDNSHostnames``, on by default; the subdomain defaults to the
    JobSet's name, a headless Service JobSet creates; not-ready pods are published by default)."""
    return f"{name}-{REPLICATED_JOB}-0-0.{name}"


def jobset_manifest(
    cfg: SweepConfig,
    *,
    args: list[str],
    env: list[dict[str, Any]],
    resources: dict[str, Any],
    volume_mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    node_selector: dict[str, str] | None,
    tolerations: list[dict[str, Any]] | None,
    security_context: dict[str, Any],
    pod_security_context: dict[str, Any],
    labels: dict[str, str],
) -> dict[str, Any]:
    """The JobSet of one trial on ``resources.nodes`` nodes.

    Args:
        args: the train step's args (``--nnodes M --nproc-per-node N`` included).
        env: the train step's env (secrets as ``secretKeyRef``, never values); the rendezvous
            variables and the attempt are added here.
        labels: the pods' labels (the workflow's); the trial's id is added.
    """
    meta_labels = {PIPELINE_LABEL: cfg.name, TRIAL_LABEL: "{{inputs.parameters.trial-id}}"}
    if cfg.cluster.queue:
        meta_labels = {QUEUE_LABEL: cfg.cluster.queue, **meta_labels}
    container = _container(cfg, args, env, resources, volume_mounts, security_context)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": cfg.cluster.service_account,
        "securityContext": pod_security_context,
        "terminationGracePeriodSeconds": cfg.cluster.grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pod = {
        "metadata": {"labels": {**labels, TRIAL_LABEL: "{{inputs.parameters.trial-id}}"}},
        "spec": pod_spec,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "labels": meta_labels},
        "spec": {
            "failurePolicy": _failure_policy(cfg),
            "replicatedJobs": [
                {"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": _job_spec(cfg, pod)}}
            ],
        },
    }


def _container(
    cfg: SweepConfig,
    args: list[str],
    env: list[dict[str, Any]],
    resources: dict[str, Any],
    volume_mounts: list[dict[str, Any]],
    security_context: dict[str, Any],
) -> dict[str, Any]:
    """Every pod's one container: the single-node train step's, with the gang's env."""
    return {
        "name": CONTAINER,
        "image": steps.image(cfg, "train"),
        "command": steps.command("train"),
        "args": args,
        "env": _gang_env(env),
        "resources": resources,
        "volumeMounts": volume_mounts,
        "securityContext": security_context,
    }


def _gang_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The train step's env with the attempt read from JobSet's restart counter and the
    rendezvous (node rank 0's address, torchrun's port) added."""
    return [
        *(e for e in env if e["name"] != "SWEEPYARD_ATTEMPT"),
        {
            "name": "SWEEPYARD_ATTEMPT",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{RESTART_ANNOTATION}']"}
            },
        },
        *({"name": k, "value": v} for k, v in steps.rendezvous_env(master_addr()).items()),
    ]


def _job_spec(cfg: SweepConfig, pod: dict[str, Any]) -> dict[str, Any]:
    """The one Job of the gang: ``nodes`` indexed pods, failed at its first failed pod with the
    reason the JobSet's rules read (module docstring)."""
    nodes = cfg.resources.nodes
    return {
        "parallelism": nodes,
        "completions": nodes,
        "completionMode": "Indexed",  # JOB_COMPLETION_INDEX: the node rank
        "backoffLimit": 0,  # the first failed pod fails the Job; the JobSet decides what next
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]},
                _fail_on_exit_code(EXIT_GIVE_UP),
                _fail_on_exit_code(EXIT_PREEMPTED),
            ]
        },
        "template": pod,
    }


def _fail_on_exit_code(code: int) -> dict[str, Any]:
    return {
        "action": "FailJob",
        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [code]},
    }


def _failure_policy(cfg: SweepConfig) -> dict[str, Any]:
    """The JobSet's rules: a preempted gang restarts for free, exit 3 gives up, any other
    failure restarts it at most ``retries.app_errors`` times."""
    return {
        "maxRestarts": cfg.retries.app_errors,
        "rules": [
            {
                "name": "Preempted",
                "action": "RestartJobSetAndIgnoreMaxRestarts",
                "onJobFailureReasons": [POD_FAILURE_REASON],
                "onJobFailureMessagePatterns": [PREEMPTED_PATTERN, STOPPED_PATTERN],
            },
            {
                "name": "GiveUp",
                "action": "FailJobSet",
                "onJobFailureReasons": [POD_FAILURE_REASON],
                "onJobFailureMessagePatterns": [GIVE_UP_PATTERN],
            },
        ],
    }


def with_params_tag(args: list[str]) -> list[str]:
    """The train args with the params value replaced by a placeholder :func:`manifest_text` turns
    into :data:`PARAMS_TAG`."""
    i = args.index("--params") + 1
    return [*args[:i], _PARAMS_SENTINEL, *args[i + 1 :]]


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as the YAML text of the resource template: key order as built, one line per
    scalar, the params placeholder replaced by :data:`PARAMS_TAG` (a bare YAML scalar that Argo
    turns into a double-quoted JSON string)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(manifest, Dumper=_NoAliases, sort_keys=False, width=1_000_000)
    if text.count(_PARAMS_SENTINEL) != 1:
        raise ValueError("the JobSet's args must carry the params placeholder exactly once")
    return text.replace(_PARAMS_SENTINEL, PARAMS_TAG)


def train_resource(cfg: SweepConfig, *, inputs: list[str], manifest: dict[str, Any]) -> Resource:
    """The ``train`` template of a multi-node trial: create the JobSet, owned by the workflow (so it
    is deleted with it), and wait until it is Completed or Failed. ``terminalState`` is a string
    field: Argo's conditions cannot match entries of a status list (argo-workflows#2288), so the
    JobSet's conditions list is not what they read.

    No ``retryStrategy``: the JobSet's failure policy carries the budgets (module docstring); an
    Argo retry would only create the JobSet again after it gave up.
    """
    return Resource(
        name="train",
        inputs=[Parameter(name=n) for n in inputs],
        action="create",
        set_owner_reference=True,
        success_condition=SUCCESS_CONDITION,
        failure_condition=FAILURE_CONDITION,
        manifest=manifest_text(manifest),
    )

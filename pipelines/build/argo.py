"""The sweep as an Argo Workflow (Hera): plan → fetch → train (fan-out) → compare; notify on exit.

An adaptive search (``search.algorithm: tpe`` ...) replaces plan and the one fan-out by the
recursive ``round`` template: suggest → train (fan-out of the round's trials) → the next ``round``
when suggest says ``more``; the manifest stays the same size whatever ``max_trials`` is. With
``search.trials_per_pod`` > 1 the fan-out is over the round's pods, each running trials in turn.

Wiring only: every command line comes from :mod:`pipelines.build.steps`, placement, volumes and
retries from :mod:`pipelines.build.pods`, every knob from the config.
"""

from __future__ import annotations

import json
from typing import Any

from hera.workflows import (
    DAG,
    Artifact,
    Container,
    CronWorkflow,
    Env,
    NoneArchiveStrategy,
    Parameter,
    Resource,
    RetryStrategy,
    SecretEnv,
    Task,
    Workflow,
)
from hera.workflows import models as m

from components.contract import EXIT_GIVE_UP
from pipelines.build import jobset, pods, steps
from pipelines.config import SweepConfig

SHARED_VOLUME = "shared"
_CONTAINER_SECURITY = m.SecurityContext(
    read_only_root_filesystem=True,
    allow_privilege_escalation=False,
    capabilities=m.Capabilities(drop=["ALL"]),
)
RETRY_EXPRESSION = f'lastRetry.status == "Error" or asInt(lastRetry.exitCode) != {EXIT_GIVE_UP}'
SWEEP_ID = "{{workflow.parameters.sweep-id}}"
TRAIN_INPUTS = ["trial-id", "params", "data-path", "data-hash"]


def build(cfg: SweepConfig) -> Workflow:
    """The sweep's Workflow; ``to_dict()`` is the manifest every backend receives."""
    with Workflow(**_workflow_kwargs(cfg)) as workflow:
        _templates(cfg)
    return workflow


def build_cron(cfg: SweepConfig) -> CronWorkflow:
    """The same workflow on the config's schedule (5-field cron, one run at a time)."""
    if cfg.schedule is None:
        raise ValueError(f"pipeline {cfg.name!r} has no 'schedule' in its config")
    kwargs = _workflow_kwargs(cfg)
    kwargs["name"] = kwargs.pop("generate_name").rstrip("-")
    with CronWorkflow(
        schedules=[cfg.schedule.cron],
        timezone=cfg.schedule.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=cfg.schedule.starting_deadline_seconds,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=3,
        **kwargs,
    ) as cron:
        _templates(cfg)
    return cron


def _workflow_kwargs(cfg: SweepConfig) -> dict:  # type: ignore[type-arg]
    labels = {"app.kubernetes.io/name": "sweepyard", "sweepyard.io/pipeline": cfg.name}
    return {
        "generate_name": f"{cfg.name}-",
        "namespace": cfg.cluster.namespace,
        "labels": labels,
        "annotations": {"sweepyard.io/description": cfg.description} if cfg.description else None,
        "entrypoint": "main",
        "on_exit": "notify",
        "arguments": [
            Parameter(
                name="sweep-id",
                value="",
                description="resume this sweep; empty = the workflow's name",
            )
        ],
        "parallelism": cfg.parallelism,
        "service_account_name": cfg.cluster.service_account,
        "active_deadline_seconds": cfg.cluster.active_deadline_seconds,
        "pod_gc": m.PodGC(strategy="OnPodSuccess"),
        "ttl_strategy": m.TTLStrategy(
            seconds_after_completion=cfg.cluster.ttl_seconds_after_completion
        ),
        "pod_metadata": m.Metadata(labels=labels),
        # Every pod runs as the image's non-root user under the RuntimeDefault seccomp profile;
        # each container adds a read-only root and no capabilities (_CONTAINER_SECURITY).
        "security_context": m.PodSecurityContext(
            run_as_non_root=True,
            run_as_user=steps.IMAGE_UID,
            run_as_group=steps.IMAGE_UID,
            fs_group=steps.IMAGE_UID,
            seccomp_profile=m.SeccompProfile(type="RuntimeDefault"),
        ),
        "volumes": [
            m.Volume(
                name=SHARED_VOLUME,
                persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(
                    claim_name=cfg.cluster.claim
                ),
            ),
            m.Volume(name=pods.TMP_VOLUME, empty_dir=m.EmptyDirVolumeSource()),
        ],
    }


def _templates(cfg: SweepConfig) -> None:
    """Declare the step templates and the DAG inside the active workflow context."""
    first = (
        _container(
            cfg, "suggest", steps.suggest_args(cfg, sweep_id=SWEEP_ID), outputs=["trials", "more"]
        )
        if cfg.search.adaptive
        else _container(cfg, "plan", steps.plan_args(cfg, sweep_id=SWEEP_ID), outputs=["trials"])
    )
    fetch = (
        _container(cfg, "fetch", steps.fetch_args(cfg), outputs=["path", "hash"])
        if cfg.data is not None
        else None
    )
    train = _train_template(cfg)
    compare = _container(
        cfg,
        "compare",
        steps.compare_args(cfg, sweep_id=SWEEP_ID),
        outputs=["summary"],
        artifacts=steps.COMPARE_ARTIFACTS,
    )
    _container(
        cfg,
        "notify",
        steps.notify_args(
            cfg, sweep_id=SWEEP_ID, status="{{workflow.status}}", workflow_name="{{workflow.name}}"
        ),
    )
    if cfg.search.adaptive:
        _rounds(first, fetch, train, compare)
        return
    with DAG(name="main"):
        Task(name="plan", template=first)
        if fetch is not None:
            Task(name="fetch", template=fetch, depends="plan")
        Task(
            name="train",
            template=train,
            depends="plan && fetch" if fetch is not None else "plan",
            with_param="{{tasks.plan.outputs.parameters.trials}}",
            arguments={"trial-id": "{{item.id}}", "params": "{{item.params}}", **_data(fetch)},
        )
        # Skipped: plan handed out no trial (all finished before: a resubmitted sweep); Argo
        # marks a fan-out over `[]` Skipped, where AnySucceeded and AllFailed never hold.
        Task(
            name="compare",
            template=compare,
            depends="train.AnySucceeded || train.AllFailed || train.Skipped",
        )


def _data(fetch: Container | None) -> dict[str, str]:
    """The train step's data arguments: the fetch step's outputs, or empty without data."""
    if fetch is None:
        return {"data-path": "", "data-hash": ""}
    return {
        "data-path": "{{tasks.fetch.outputs.parameters.path}}",
        "data-hash": "{{tasks.fetch.outputs.parameters.hash}}",
    }


def _rounds(
    suggest: Container, fetch: Container | None, train: Container | Resource, compare: Container
) -> None:
    """``main``: fetch → round → compare; ``round``: suggest → train (fan-out) → round (recursion)."""
    data = {
        "data-path": "{{inputs.parameters.data-path}}",
        "data-hash": "{{inputs.parameters.data-hash}}",
    }
    with DAG(name="round", inputs=[Parameter(name="data-path"), Parameter(name="data-hash")]):
        Task(name="suggest", template=suggest)
        Task(
            name="train",
            template=train,
            depends="suggest",
            with_param="{{tasks.suggest.outputs.parameters.trials}}",
            arguments={"trial-id": "{{item.id}}", "params": "{{item.params}}", **data},
        )
        Task(
            name="next",
            template="round",
            depends="train.AnySucceeded || train.AllFailed",
            when="{{tasks.suggest.outputs.parameters.more}} == true",
            arguments=data,
        )
    with DAG(name="main"):
        if fetch is not None:
            Task(name="fetch", template=fetch)
        Task(
            name="round",
            template="round",
            depends="fetch" if fetch is not None else None,
            arguments=_data(fetch),
        )
        Task(
            name="compare",
            template=compare,
            depends="round.Succeeded || round.Failed || round.Errored",
        )


def _train_template(cfg: SweepConfig) -> Container | Resource:
    """A trial: a container step on one node; past one node, a JobSet the step creates."""
    data = {
        "data_path": "{{inputs.parameters.data-path}}",
        "data_hash": "{{inputs.parameters.data-hash}}",
    }
    if cfg.search.trials_per_pod > 1:  # the item is a pod's (trial-id: its slot), not a trial's
        args = steps.pod_trials_args(
            cfg, sweep_id=SWEEP_ID, item="{{inputs.parameters.params}}", **data
        )
    else:
        args = steps.train_args(
            cfg,
            sweep_id=SWEEP_ID,
            trial_id="{{inputs.parameters.trial-id}}",
            params="{{inputs.parameters.params}}",
            **data,
        )
    if cfg.resources.nodes > 1:
        return _jobset_train(cfg, args)
    return _container(
        cfg,
        "train",
        args,
        inputs=TRAIN_INPUTS,
        resources=_train_resources(cfg),
        node_selector=pods.node_selector(cfg) or None,
        tolerations=_tolerations(cfg) or None,
        extra_mounts=[_shm_mount()],
        volumes=[_shm_volume(cfg)],
        pod_spec_patch=json.dumps({"terminationGracePeriodSeconds": cfg.cluster.grace_seconds}),
        # Kueue's pod integration admits the trial's pod through the LocalQueue (README)
        labels={jobset.QUEUE_LABEL: cfg.cluster.queue} if cfg.cluster.queue else None,
    )


def _jobset_train(cfg: SweepConfig, args: list[str]) -> Resource:
    """A trial on ``resources.nodes`` nodes: the train step creates its JobSet, whose pods are
    the single-node step's container (same env, resources, mounts, placement, security)."""
    kwargs = _workflow_kwargs(cfg)
    return jobset.train_resource(
        cfg,
        inputs=TRAIN_INPUTS,
        manifest=jobset.jobset_manifest(
            cfg,
            args=jobset.with_params_tag(args),
            env=[_k8s(e.build()) for e in _env(cfg, "train", retry=True)],
            resources=_k8s(_train_resources(cfg)),
            volume_mounts=[_k8s(v) for v in (*_mounts(cfg), _shm_mount())],
            volumes=[_k8s(v) for v in (*kwargs["volumes"], _shm_volume(cfg))],
            node_selector=pods.node_selector(cfg) or None,
            tolerations=[_k8s(t) for t in _tolerations(cfg)] or None,
            security_context=_k8s(_CONTAINER_SECURITY),
            pod_security_context=_k8s(kwargs["security_context"]),
            labels=kwargs["labels"],
        ),
    )


def _train_resources(cfg: SweepConfig) -> m.ResourceRequirements:
    """A trial's requests and limits: CPU and memory, its GPUs."""
    res = cfg.resources
    limits = {"memory": m.Quantity(res.memory)}
    if res.gpu.count > 0:
        limits[pods.GPU_RESOURCE] = m.Quantity(str(res.gpu.count))
    return m.ResourceRequirements(
        requests={"cpu": m.Quantity(res.cpu), "memory": m.Quantity(res.memory)}, limits=limits
    )


def _tolerations(cfg: SweepConfig) -> list[m.Toleration]:
    return [
        m.Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
        for t in pods.tolerations(cfg)
    ]


def _shm_mount() -> m.VolumeMount:
    return m.VolumeMount(name=pods.SHM_VOLUME, mount_path=pods.SHM_PATH)


def _shm_volume(cfg: SweepConfig) -> m.Volume:
    """A trial's /dev/shm: memory-backed, ``resources.shm`` at most."""
    return m.Volume(
        name=pods.SHM_VOLUME,
        empty_dir=m.EmptyDirVolumeSource(medium="Memory", size_limit=m.Quantity(cfg.resources.shm)),
    )


def _k8s(model: Any) -> Any:
    """A Hera/Kubernetes model as the plain data of a manifest (field names as the API spells them)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _env(cfg: SweepConfig, step: str, *, retry: bool) -> list[Env | SecretEnv]:
    """A step's env: plain values, the workflow's name, the attempt, secrets by reference."""
    env: list[Env | SecretEnv] = [
        Env(name=k, value=v) for k, v in steps.plain_env(cfg, step).items()
    ]
    env.append(Env(name="SWEEPYARD_WORKFLOW_NAME", value="{{workflow.name}}"))
    if retry:
        env.append(Env(name="SWEEPYARD_ATTEMPT", value="{{retries}}"))
    env += [
        SecretEnv(name=s.env, secret_name=cfg.cluster.secret, secret_key=s.key, optional=s.optional)
        for s in steps.secret_env(cfg, step)
    ]
    return env


def _mounts(cfg: SweepConfig) -> list[m.VolumeMount]:
    """Every step's mounts: the shared disk and the writable /tmp."""
    return [
        m.VolumeMount(name=SHARED_VOLUME, mount_path=cfg.cluster.mount_path),
        m.VolumeMount(name=pods.TMP_VOLUME, mount_path=pods.TMP_PATH),
    ]


def _container(
    cfg: SweepConfig,
    step: str,
    args: list[str],
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    artifacts: dict[str, str] | None = None,
    extra_mounts: list[m.VolumeMount] | None = None,
    **kwargs: object,
) -> Container:
    retry_limit = pods.retry_limit(cfg, step)
    return Container(
        name=step,
        image=steps.image(cfg, step),
        command=steps.command(step),
        args=args,
        env=_env(cfg, step, retry=retry_limit is not None),
        inputs=[Parameter(name=n) for n in inputs or []],
        outputs=[
            *(
                Parameter(name=n, value_from=m.ValueFrom(path=steps.output_path(n)))
                for n in outputs or []
            ),
            # The Argo UI shows these from the artifact repository (deploy/argo); unarchived so
            # it previews them; optional so a compare that crashed fails on its own error.
            *(
                Artifact(
                    name=n, path=steps.output_path(f), optional=True, archive=NoneArchiveStrategy()
                )
                for n, f in (artifacts or {}).items()
            ),
        ],
        volume_mounts=[*_mounts(cfg), *(extra_mounts or [])],
        security_context=_CONTAINER_SECURITY,
        retry_strategy=_retry(cfg, retry_limit) if retry_limit is not None else None,
        **kwargs,  # type: ignore[arg-type]
    )


def _retry(cfg: SweepConfig, limit: int) -> RetryStrategy:
    """DESIGN.md's exit-code contract: retry everything but exit 3, on another node, with backoff."""
    b = cfg.retries.backoff
    return RetryStrategy(
        limit=limit,
        retry_policy="Always",
        expression=RETRY_EXPRESSION,
        backoff=m.Backoff(
            duration=b.duration, factor=m.IntOrString(b.factor), max_duration=b.max_duration
        ),
        affinity=m.RetryAffinity(node_anti_affinity=m.RetryNodeAntiAffinity()),
    )

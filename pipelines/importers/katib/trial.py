"""``spec.trialTemplate``: the trial's Job checked down to its one container, whose command, image
and resources make the config's ``trainer`` and ``resources`` (and its ``backoffLimit`` the
``retries``); ``trialParameters`` say what the command's ``${trialParameters.X}`` become."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipelines.importers.katib.command import command
from pipelines.importers.katib.common import Context, mapping
from pipelines.importers.katib.params import Param
from pipelines.importers.katib.resources import ACCELERATOR_LABEL, SPOT_LABEL, resources

PATH = "spec.trialTemplate"
TEMPLATE_KEYS = frozenset(
    {
        "retain",
        "trialSpec",
        "configMap",
        "trialParameters",
        "primaryPodLabels",
        "primaryContainerName",
        "successCondition",
        "failureCondition",
    }
)
MULTI_NODE_KINDS = frozenset(
    {"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "TrainJob"}
)
DEFAULT_CONDITIONS = {
    "successCondition": 'status.conditions.#(type=="Complete")#|#(status=="True")#',
    "failureCondition": 'status.conditions.#(type=="Failed")#|#(status=="True")#',
}
MAX_APP_ERRORS = 20  # retries.app_errors' bound
# fields a trial's Job or pod may carry that only place or decorate it: dropped, noted
DROPPED_JOB = frozenset({"ttlSecondsAfterFinished"})
DROPPED_POD = frozenset(
    {
        "nodeSelector",
        "tolerations",
        "affinity",
        "serviceAccountName",
        "serviceAccount",
        "securityContext",
        "imagePullSecrets",
        "priorityClassName",
        "schedulerName",
        "terminationGracePeriodSeconds",
        "topologySpreadConstraints",
        "dnsPolicy",
        "enableServiceLinks",
    }
)
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
META_REF = re.compile(r"^\$\{trialSpec\.([A-Za-z]+)(?:\[([^\]]+)\])?\}$")


def trial(
    ctx: Context, tt: Any, params: list[Param]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """``trainer``'s ``{command, image}`` (None where refused), ``resources``, and ``retries``
    (None: Katib's default)."""
    trainer: dict[str, Any] = {"command": None, "image": None}
    defaults: dict[str, Any] = {"gpu": {"count": 0}}
    job_spec = _job_spec(ctx, tt)
    if job_spec is None:
        return trainer, defaults, None
    refs = trial_parameters(ctx, tt.get("trialParameters"), params, job_spec)
    container, cpath, pod, job = _container(ctx, job_spec, tt.get("primaryContainerName"))
    if container is None:
        return trainer, defaults, None
    retries = _job(ctx, job, f"{PATH}.trialSpec.spec")
    node_selector = mapping(pod.get("nodeSelector"))
    trainer["command"] = command(ctx, container, cpath, refs)
    image = container.get("image")
    if not isinstance(image, str) or not IMAGE.match(image):
        ctx.refuse(
            f"{cpath}.image", f"an image reference must match {IMAGE.pattern}, got {image!r}"
        )
    trainer["image"] = image
    found = resources(ctx, container.get("resources"), f"{cpath}.resources", node_selector)
    return trainer, found, retries


def _job_spec(ctx: Context, tt: Any) -> Mapping[str, Any] | None:
    """The template's ``trialSpec``, a batch/v1 Job, with the template's own fields checked;
    None after refusing."""
    if not isinstance(tt, Mapping):
        ctx.refuse(PATH, "required: the trial's Job")
        return None
    for key in sorted(set(tt) - TEMPLATE_KEYS):
        ctx.refuse(f"{PATH}.{key}", "not a field of a Katib trial template")
    if tt.get("configMap") is not None:
        ctx.refuse(
            f"{PATH}.configMap",
            "the trial template is in a ConfigMap this import cannot read: put it inline "
            "as trialSpec",
        )
        return None
    spec = tt.get("trialSpec")
    if not isinstance(spec, Mapping):
        ctx.refuse(f"{PATH}.trialSpec", "required: the trial's Job")
        return None
    kind, api = spec.get("kind"), spec.get("apiVersion")
    if kind in MULTI_NODE_KINDS:
        ctx.refuse(
            f"{PATH}.trialSpec.kind",
            f"{kind}: multi-node trials are not supported yet (a trial is one batch/v1 Job)",
        )
        return None
    if (api, kind) != ("batch/v1", "Job"):
        ctx.refuse(
            f"{PATH}.trialSpec.kind",
            f"{api}/{kind} cannot map: a trial must be a batch/v1 Job",
        )
        return None
    for key, default in DEFAULT_CONDITIONS.items():
        if tt.get(key) not in (None, "", default):
            ctx.refuse(
                f"{PATH}.{key}",
                "a custom condition cannot map: a trial ends by its program's exit code",
            )
    return spec


def trial_parameters(
    ctx: Context, raw: Any, params: list[Param], job_spec: Mapping[str, Any]
) -> dict[str, str | None]:
    """Each trialParameter's name -> what ``${trialParameters.<name>}`` becomes here (None:
    refused already)."""
    path = f"{PATH}.trialParameters"
    by_katib = {p.katib: p for p in params}
    if raw is None:
        return {}
    if not isinstance(raw, list):
        ctx.refuse(path, "must be a list of {name, reference}")
        return {}
    meta = mapping(job_spec.get("metadata"))
    refs: dict[str, str | None] = {}
    for i, tp in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(tp, Mapping) or not tp.get("name") or not tp.get("reference"):
            ctx.refuse(where, "a trial parameter is {name, reference}")
            continue
        name, ref = str(tp["name"]), str(tp["reference"])
        if ref in by_katib:
            refs[name] = "{" + by_katib[ref].name + "}"
        else:
            refs[name] = _job_reference(ctx, ref, f"{where}.reference", meta)
    return refs


def _job_reference(ctx: Context, ref: str, where: str, meta: Mapping[str, Any]) -> str | None:
    """What ``${trialSpec.<field>}`` (the trial Job's name, kind, a label...) is in a sweepyard
    trial; None after refusing."""
    meta_ref = META_REF.match(ref)
    if meta_ref is None:
        ctx.refuse(where, f"{ref!r} is not a parameter of spec.parameters")
        return None
    key, sub = meta_ref.groups()
    if key == "Name" and sub is None:
        ctx.note(where, "${trialSpec.Name} is the trial's id, {trial_id}")
        return "{trial_id}"
    if key == "Kind" and sub is None:
        return "Job"
    if key == "APIVersion" and sub is None:
        return "batch/v1"
    if key in ("Labels", "Annotations") and sub is not None:
        values = mapping(meta.get(key.lower()))
        if sub in values:
            return str(values[sub])
        ctx.refuse(where, f"{ref}: the trial's Job sets no such {key[:-1].lower()} to read")
        return None
    ctx.refuse(where, f"{ref} cannot map (trials run in sweepyard's namespace, named by their id)")
    return None


def _container(
    ctx: Context, job_spec: Mapping[str, Any], primary: Any
) -> tuple[Mapping[str, Any] | None, str, Mapping[str, Any], Mapping[str, Any]]:
    """The trial's container (None after refusing), its field path, its pod's spec and the Job's
    spec; the Job's and the pod's other fields are checked."""
    base = f"{PATH}.trialSpec"
    meta = job_spec.get("metadata")
    if isinstance(meta, Mapping) and meta:
        for key in sorted(set(meta) - {"labels", "annotations"}):
            ctx.refuse(f"{base}.metadata.{key}", "cannot map (Katib forbids it too)")
    for key in sorted(set(job_spec) - {"apiVersion", "kind", "metadata", "spec"}):
        ctx.refuse(f"{base}.{key}", "not a field of a Job")
    job = job_spec.get("spec")
    template = job.get("template") if isinstance(job, Mapping) else None
    pod = template.get("spec") if isinstance(template, Mapping) else None
    if not isinstance(job, Mapping) or not isinstance(pod, Mapping):
        ctx.refuse(f"{base}.spec.template.spec", "required: the trial's pod")
        return None, "", {}, {}
    assert isinstance(template, Mapping)
    pmeta = template.get("metadata")
    if isinstance(pmeta, Mapping) and pmeta:
        ctx.note(f"{base}.spec.template.metadata", "the pod's labels and annotations are dropped")
    ppath = f"{base}.spec.template.spec"
    for key in sorted(set(template) - {"metadata", "spec"}):
        ctx.refuse(f"{base}.spec.template.{key}", "not a field of a pod template")
    for key in sorted(set(pod) - {"containers", "restartPolicy"}):
        if key in DROPPED_POD:
            ctx.note(f"{ppath}.{key}", _dropped_pod_field(key, pod[key]))
        else:
            ctx.refuse(
                f"{ppath}.{key}",
                "cannot map: a trial is one container in a pod that sweepyard builds "
                "(volumes: the trial gets the shared disk and its working folder)",
            )
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        ctx.refuse(f"{ppath}.containers", "required: the trial's container")
        return None, "", pod, job
    index = _primary(ctx, containers, primary, f"{ppath}.containers")
    if index is None:
        return None, "", pod, job
    return containers[index], f"{ppath}.containers[{index}]", pod, job


def _primary(ctx: Context, containers: list[Any], primary: Any, path: str) -> int | None:
    """The index of the trial's one container (named by ``primaryContainerName`` when there are
    several; the others are refused as sidecars); None after refusing."""
    names = [c.get("name") if isinstance(c, Mapping) else None for c in containers]
    if primary is None and len(containers) == 1:
        index = 0
    elif primary in names:
        index = names.index(primary)
    else:
        ctx.refuse(
            f"{PATH}.primaryContainerName",
            f"{primary!r} names none of the trial's containers ({names})",
        )
        return None
    for j in range(len(containers)):
        if j != index:
            ctx.refuse(f"{path}[{j}]", "a trial is one container: sidecars cannot map")
    return index


def _dropped_pod_field(key: str, value: Any) -> str:
    """The note on a pod field that is dropped (or, for the GPU type and spot, mapped)."""
    if key == "nodeSelector":
        kept = {ACCELERATOR_LABEL, SPOT_LABEL}
        dropped = sorted(k for k in (value or {}) if k not in kept)
        if not dropped:
            return "mapped to resources (gpu.type, spot)"
        return f"{', '.join(dropped)} dropped: sweepyard places trials (resources.gpu, spot)"
    return "dropped: sweepyard builds the trial's pod (placement, identity, non-root, grace)"


def _job(ctx: Context, job: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """``retries`` of the Job's ``backoffLimit`` (None: not given); the Job's other fields are
    checked."""
    retries = None
    for key in sorted(set(job) - {"template"}):
        value = job[key]
        if key == "backoffLimit":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                ctx.refuse(f"{path}.backoffLimit", f"must be a whole number >= 0, got {value!r}")
                continue
            if value > MAX_APP_ERRORS:
                ctx.note(
                    f"{path}.backoffLimit",
                    f"{value} is {MAX_APP_ERRORS} here (retries.app_errors' most)",
                )
            retries = {"app_errors": min(value, MAX_APP_ERRORS)}
        elif key in ("parallelism", "completions") and value == 1:
            continue
        elif key in DROPPED_JOB:
            ctx.note(f"{path}.{key}", "dropped: a sweep keeps its trials' records")
        else:
            ctx.refuse(f"{path}.{key}", "cannot map: a trial is one pod that runs once")
    return retries

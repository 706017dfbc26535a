"""Semantic lint of Argo manifests with ``argo lint``'s main rules (after the schema check passed).

Document-level rules live here: names, the entrypoint, onExit and hooks, workflow arguments,
CronWorkflow schedules, and each template's own fields (type, retry strategy, outputs). Everything
that reads references inside DAG and steps templates is in :mod:`pipelines.validate.graph`.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from croniter import croniter

from components.durations import is_duration, parse_seconds_or_duration
from pipelines.argo.vocab import RETRY_POLICIES, TEMPLATE_KINDS
from pipelines.validate.fields import (
    FIELD_NAME,
    PARAM_NAME,
    arguments_problems,
    check_hook,
    check_names,
    undefined_template,
    volume_mount_problems,
)
from pipelines.validate.graph import TemplateGraph
from pipelines.validate.problem import Path, Problem, problem
from pipelines.validate.refs import workflow_scope
from pipelines.validate.schema import pod_spec_patch_problems

POD_GC_STRATEGIES = ("OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MAX_NAME = {"CronWorkflow": 52}


def lint_document(doc: dict[str, Any], kind: str) -> list[Problem]:
    """Every ``argo lint`` problem of a schema-valid document of ``kind``."""
    problems = _metadata(doc.get("metadata", {}), kind)
    spec = doc["spec"]
    if kind == "CronWorkflow":
        problems += _cron(spec)
        spec_path: Path = ("spec", "workflowSpec")
        wf_spec = spec["workflowSpec"]
    else:
        spec_path = ("spec",)
        wf_spec = spec
    problems += lint_workflow_spec(wf_spec, spec_path, kind, doc.get("metadata", {}))
    return problems


def lint_workflow_spec(
    spec: dict[str, Any], spec_path: Path, kind: str, metadata: dict[str, Any]
) -> list[Problem]:
    """The rules on a ``WorkflowSpec`` (a Workflow's ``spec``, a CronWorkflow's ``workflowSpec``)."""
    problems: list[Problem] = []
    templates = spec.get("templates", [])
    problems += check_names(templates, (*spec_path, "templates"), "template", FIELD_NAME)
    problems += arguments_problems(
        spec.get("arguments", {}), (*spec_path, "arguments"), allow_empty=True
    )
    strategy = spec.get("podGC", {}).get("strategy")
    if strategy and strategy not in POD_GC_STRATEGIES:
        problems.append(
            problem((*spec_path, "podGC", "strategy"), _not_one_of(strategy, POD_GC_STRATEGIES))
        )
    if "workflowTemplateRef" in spec:
        if templates:
            problems.append(
                problem(
                    (*spec_path, "templates"),
                    "must be empty when workflowTemplateRef is set (the templates come from it)",
                )
            )
        return problems
    names = [t["name"] for t in templates if t.get("name")]
    entrypoint = spec.get("entrypoint")
    is_template_kind = kind in ("WorkflowTemplate", "ClusterWorkflowTemplate")
    if not entrypoint and not is_template_kind:
        problems.append(
            problem(
                (*spec_path, "entrypoint"),
                "required: name the template the workflow starts with "
                f"(templates: {', '.join(names) or 'none'})",
            )
        )
    for key in ("entrypoint", "onExit"):
        ref = spec.get(key)
        if ref and ref not in names:
            problems.append(problem((*spec_path, key), undefined_template(ref, names)))
    if spec.get("podSpecPatch"):
        problems += pod_spec_patch_problems(spec["podSpecPatch"], (*spec_path, "podSpecPatch"))
    if not is_template_kind:
        problems += volume_mount_problems(spec, spec_path)
        problems += _entrypoint_inputs(spec, spec_path)
    for hook_name, hook in spec.get("hooks", {}).items():
        problems += check_hook(hook, (*spec_path, "hooks", hook_name), hook_name, names)
    scope = workflow_scope(spec, metadata, any_parameter=is_template_kind)
    graph = TemplateGraph(templates, spec_path, scope)
    # Workflow-level fields (volumes, podSpecPatch, metadata, hooks) see the global variables only.
    spec_fields = {k: v for k, v in spec.items() if k not in ("templates", "arguments")}
    problems += graph.check_tags(spec_fields, spec_path, scope)
    for i, template in enumerate(templates):
        path = (*spec_path, "templates", i)
        problems += _template(template, path)
        problems += graph.lint(template, path)
    return problems


def _entrypoint_inputs(spec: dict[str, Any], spec_path: Path) -> list[Problem]:
    """The entrypoint's input parameters without a default come from ``spec.arguments``."""
    entry = next(
        (t for t in spec.get("templates", []) if t.get("name") == spec.get("entrypoint")), None
    )
    if entry is None:
        return []
    given = {p.get("name") for p in spec.get("arguments", {}).get("parameters", [])}
    return [
        problem(
            (*spec_path, "arguments", "parameters"),
            f"the entrypoint {entry['name']!r} needs input parameter {param.get('name')!r}: "
            "declare it here",
        )
        for param in entry.get("inputs", {}).get("parameters", [])
        if not any(k in param for k in ("value", "default", "valueFrom"))
        and param.get("name") not in given
    ]


def _not_one_of(value: Any, allowed: tuple[str, ...]) -> str:
    return f"{value!r} is not one of {', '.join(allowed)}"


def _metadata(metadata: dict[str, Any], kind: str) -> list[Problem]:
    problems: list[Problem] = []
    name, generate = metadata.get("name"), metadata.get("generateName")
    limit = MAX_NAME.get(kind, 63)
    if name and "{{" not in name:
        if not DNS_SUBDOMAIN.match(name):
            problems.append(
                problem(
                    ("metadata", "name"),
                    f"invalid name {name!r}: lowercase alphanumeric characters, '-' or '.', "
                    "starting and ending with an alphanumeric character",
                )
            )
        if len(name) > limit:
            problems.append(
                problem(("metadata", "name"), f"{kind} name must be at most {limit} characters")
            )
    if generate and not DNS_SUBDOMAIN.match(generate.rstrip("-") or "x"):
        problems.append(
            problem(
                ("metadata", "generateName"),
                f"invalid generateName {generate!r}: lowercase alphanumeric characters, '-' or '.'",
            )
        )
    return problems


def _cron(spec: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for i, schedule in enumerate(spec.get("schedules", [])):
        error = cron_error(schedule)
        if error:
            problems.append(problem(("spec", "schedules", i), error))
    if not spec.get("schedules"):
        problems.append(problem(("spec", "schedules"), "at least one schedule is required"))
    timezone = spec.get("timezone")
    if timezone:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(problem(("spec", "timezone"), f"unknown time zone {timezone!r}"))
    policy = spec.get("concurrencyPolicy")
    if policy and policy not in CONCURRENCY_POLICIES:
        problems.append(
            problem(("spec", "concurrencyPolicy"), _not_one_of(policy, CONCURRENCY_POLICIES))
        )
    if spec.get("startingDeadlineSeconds", 0) < 0:
        problems.append(problem(("spec", "startingDeadlineSeconds"), "must not be negative"))
    return problems


def cron_error(schedule: str) -> str | None:
    """Why ``schedule`` is not a standard 5-field cron expression (Argo's parser), or ``None``."""
    expression = schedule.strip()
    if expression.startswith(("CRON_TZ=", "TZ=")):
        zone, _, expression = expression.partition(" ")
        try:
            zoneinfo.ZoneInfo(zone.split("=", 1)[1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            return f"unknown time zone in {schedule!r}"
        expression = expression.strip()
    if expression.startswith("@every "):  # robfig/cron: time.ParseDuration of the rest, as is
        if is_duration(expression[len("@every ") :]):
            return None
        return f"{schedule!r}: '@every' needs a duration such as 1h30m"
    if expression in CRON_DESCRIPTORS:
        return None
    fields = expression.split()
    if len(fields) != 5:
        return (
            f"{schedule!r} has {len(fields)} fields; a schedule needs exactly 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    if not croniter.is_valid(expression):
        return f"{schedule!r} is not a valid cron expression"
    return None


def _template(template: dict[str, Any], path: Path) -> list[Problem]:
    """A template's own fields: its type, retry strategy, timeouts, inputs and outputs."""
    kind, problems = _template_type(template, path)
    leaf = kind not in ("steps", "dag")
    problems += _retry(template.get("retryStrategy"), (*path, "retryStrategy"))
    if template.get("podSpecPatch"):
        problems += pod_spec_patch_problems(template["podSpecPatch"], (*path, "podSpecPatch"))
    if kind in ("container", "script") and template[kind].get("image") == "":
        problems.append(problem((*path, kind, "image"), "must not be empty"))
    if leaf and "parallelism" in template:
        problems.append(problem((*path, "parallelism"), "only valid on steps and dag templates"))
    problems += _timeouts(template, kind, path)
    inputs = template.get("inputs", {})
    problems += check_names(
        inputs.get("parameters", []), (*path, "inputs", "parameters"), "parameter", PARAM_NAME
    )
    problems += check_names(
        inputs.get("artifacts", []), (*path, "inputs", "artifacts"), "artifact", PARAM_NAME
    )
    problems += _outputs(template.get("outputs", {}), (*path, "outputs"), kind)
    problems += _duplicate_mounts(template, kind, path)
    return problems


def _template_type(template: dict[str, Any], path: Path) -> tuple[str, list[Problem]]:
    """The template's kind (the first it sets; "" for none) and a problem unless it sets one."""
    name = template.get("name", "")
    types = [t for t in TEMPLATE_KINDS if t in template]
    problems: list[Problem] = []
    if not types:
        problems.append(
            problem(path, f"template {name!r} has no type: give one of {', '.join(TEMPLATE_KINDS)}")
        )
    elif len(types) > 1:
        problems.append(
            problem(path, f"template {name!r} has several types ({', '.join(types)}): choose one")
        )
    return (types[0] if types else ""), problems


def _timeouts(template: dict[str, Any], kind: str, path: Path) -> list[Problem]:
    """``activeDeadlineSeconds`` (leaf templates, a whole number) and ``timeout`` (with a unit)."""
    problems: list[Problem] = []
    deadline = template.get("activeDeadlineSeconds")
    if deadline is not None:
        if kind in ("steps", "dag"):
            problems.append(
                problem((*path, "activeDeadlineSeconds"), "only valid on leaf templates")
            )
        elif not _int_or_variable(deadline, minimum=0):
            problems.append(
                problem(
                    (*path, "activeDeadlineSeconds"),
                    f"must be a positive integer or an Argo variable, got {deadline!r}",
                )
            )
    timeout = template.get("timeout")
    if timeout:
        if kind in ("steps", "dag", "suspend"):
            problems.append(problem((*path, "timeout"), f"{kind} templates have no timeout"))
        elif re.fullmatch(r"\d+", str(timeout)):
            problems.append(
                problem((*path, "timeout"), f"{timeout!r} needs a unit, e.g. {timeout}s")
            )
    return problems


def _duplicate_mounts(template: dict[str, Any], kind: str, path: Path) -> list[Problem]:
    """A container's or script's volumeMounts that mount on a path already mounted."""
    problems: list[Problem] = []
    mounts = (
        template.get(kind, {}).get("volumeMounts", []) if kind in ("container", "script") else []
    )
    seen: dict[str, int] = {}
    for i, mount in enumerate(mounts):
        if mount["mountPath"] in seen:
            problems.append(
                problem(
                    (*path, kind, "volumeMounts", i, "mountPath"),
                    f"{mount['mountPath']!r} is already mounted by volumeMounts[{seen[mount['mountPath']]}]",
                )
            )
        seen.setdefault(mount["mountPath"], i)
    return problems


def _retry(strategy: dict[str, Any] | None, path: Path) -> list[Problem]:
    if strategy is None:
        return []
    problems: list[Problem] = []
    policy = strategy.get("retryPolicy")
    if policy and policy not in RETRY_POLICIES:
        problems.append(
            problem(
                (*path, "retryPolicy"),
                f"{policy!r} is not a valid retry policy: one of {', '.join(RETRY_POLICIES)}",
            )
        )
    limit = strategy.get("limit")
    if limit is not None and not _int_or_variable(limit, minimum=0):
        problems.append(
            problem(
                (*path, "limit"),
                f"must be a non-negative integer or an Argo variable, got {limit!r}",
            )
        )
    backoff = strategy.get("backoff", {})
    factor = backoff.get("factor")
    if factor is not None and not _int_or_variable(factor, minimum=0):
        problems.append(
            problem(
                (*path, "backoff", "factor"),
                f"must be an integer or an Argo variable, got {factor!r}",
            )
        )
    for key in ("duration", "maxDuration", "cap"):
        value = backoff.get(key)
        if value and "{{" not in value and not is_duration(value, parse_seconds_or_duration):
            problems.append(
                problem(
                    (*path, "backoff", key),
                    f'{value!r} is not a duration: seconds ("30") or a Go duration ("1m30s")',
                )
            )
    return problems


def _int_or_variable(value: Any, minimum: int) -> bool:
    """An IntOrString that Argo can read as an integer: an int, a numeric string, or ``{{...}}``."""
    if isinstance(value, int):
        return value >= minimum
    text = str(value).strip()
    if "{{" in text:
        return True
    return bool(re.fullmatch(r"[-+]?\d+", text)) and int(text) >= minimum


def _outputs(outputs: dict[str, Any], path: Path, kind: str) -> list[Problem]:
    params = outputs.get("parameters", [])
    problems = check_names(params, (*path, "parameters"), "parameter", PARAM_NAME)
    problems += check_names(
        outputs.get("artifacts", []), (*path, "artifacts"), "artifact", PARAM_NAME
    )
    for i, param in enumerate(params):
        where = (*path, "parameters", i)
        value_from = param.get("valueFrom")
        if "value" in param and value_from is not None:
            problems.append(problem(where, "has both value and valueFrom: choose one"))
            continue
        if "value" in param:
            continue
        if value_from is None:
            problems.append(problem(where, "needs a value or a valueFrom"))
            continue
        sources = [
            k
            for k in ("path", "jqFilter", "jsonPath", "parameter", "expression", "supplied")
            if value_from.get(k) not in (None, "")
        ]
        if len(sources) != 1:
            problems.append(
                problem(
                    (*where, "valueFrom"),
                    "give exactly one of path, jqFilter, jsonPath, "
                    f"parameter, expression, supplied (found {', '.join(sources) or 'none'})",
                )
            )
        elif kind in ("container", "containerSet", "script") and sources != ["path"]:
            problems.append(problem((*where, "valueFrom", "path"), f"required in {kind} templates"))
        elif kind in ("dag", "steps") and sources[0] not in ("parameter", "expression"):
            problems.append(
                problem((*where, "valueFrom"), f"{kind} templates take parameter or expression")
            )
    return problems

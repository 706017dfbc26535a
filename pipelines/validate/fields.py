"""Rules on named things shared by the lint's layers: names, hooks, arguments."""

from __future__ import annotations

import re
from typing import Any

from pipelines.validate.problem import Path, Problem, problem

FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
FIELD_NAME_MESSAGE = (
    "must consist of alphanumeric characters or '-', start with an alphanumeric character "
    "and be at most 128 characters"
)
PARAM_NAME_MESSAGE = "must consist of alphanumeric characters, '_' or '-'"


def check_names(items: list[Any], path: Path, noun: str, pattern: re.Pattern[str]) -> list[Problem]:
    """Names of a list of named things: present, well-formed, unique."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = item.get("name", "") if isinstance(item, dict) else ""
        if not name:
            problems.append(problem((*path, i, "name"), f"{noun} name is required"))
            continue
        if not pattern.match(name) or len(name) > 128:
            rule = PARAM_NAME_MESSAGE if pattern is PARAM_NAME else FIELD_NAME_MESSAGE
            problems.append(problem((*path, i, "name"), f"invalid {noun} name {name!r}: {rule}"))
        if name in seen:
            problems.append(problem((*path, i, "name"), f"{noun} name {name!r} is not unique"))
        seen.add(name)
    return problems


def check_hook(hook: dict[str, Any], path: Path, hook_name: str, names: list[str]) -> list[Problem]:
    """A lifecycle hook: an expression unless it is the ``exit`` hook, and a template that exists."""
    problems: list[Problem] = []
    if hook_name != "exit" and not hook.get("expression"):
        problems.append(problem((*path, "expression"), f"hook {hook_name!r} needs an expression"))
    template = hook.get("template")
    if template and "{{" not in template and template not in names:
        problems.append(problem((*path, "template"), undefined_template(template, names)))
    if not template and "templateRef" not in hook:
        problems.append(problem(path, "a hook needs a template or a templateRef"))
    return problems


def undefined_template(name: str, names: list[str]) -> str:
    return f"no template named {name!r} (templates: {', '.join(names) or 'none'})"


def arguments_problems(arguments: dict[str, Any], path: Path, allow_empty: bool) -> list[Problem]:
    """Arguments of a workflow (``allow_empty``: lint mode) or of a task or step."""
    params = arguments.get("parameters", [])
    problems = check_names(params, (*path, "parameters"), "parameter", PARAM_NAME)
    problems += check_names(
        arguments.get("artifacts", []), (*path, "artifacts"), "artifact", PARAM_NAME
    )
    for i, param in enumerate(params):
        where = (*path, "parameters", i)
        if not allow_empty and "value" not in param and "valueFrom" not in param:
            problems.append(problem(where, f"argument {param.get('name')!r} needs a value"))
        enum = param.get("enum")
        if enum is not None:
            if not enum:
                problems.append(problem((*where, "enum"), "must list at least one value"))
            elif (
                "value" in param
                and "{{" not in str(param["value"])
                and _as_string(param["value"]) not in [_as_string(e) for e in enum]
            ):
                problems.append(
                    problem((*where, "value"), f"{param['value']!r} is not in enum {enum!r}")
                )
    return problems


def _as_string(value: Any) -> str:
    """A parameter value as Argo reads it (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def volume_mount_problems(spec: dict[str, Any], spec_path: Path) -> list[Problem]:
    """Every volumeMount names a volume of the workflow or of its template (else the pod fails).

    A template whose (or whose workflow's) ``podSpecPatch`` mentions volumes is not checked: the
    patch may add them.
    """
    problems: list[Problem] = []
    declared = {v.get("name") for v in spec.get("volumes", [])}
    declared |= {v.get("metadata", {}).get("name") for v in spec.get("volumeClaimTemplates", [])}
    if "volumes" in str(spec.get("podSpecPatch", "")):
        return []
    for i, template in enumerate(spec.get("templates", [])):
        if "volumes" in str(template.get("podSpecPatch", "")):
            continue
        names = declared | {v.get("name") for v in template.get("volumes", [])}
        containers: list[tuple[Path, dict[str, Any]]] = [
            ((key,), template[key]) for key in ("container", "script") if key in template
        ]
        for key in ("sidecars", "initContainers"):
            containers += [((key, j), c) for j, c in enumerate(template.get(key, []))]
        for j, c in enumerate(template.get("containerSet", {}).get("containers", [])):
            containers.append((("containerSet", "containers", j), c))
        for where, container in containers:
            for k, mount in enumerate(container.get("volumeMounts", [])):
                if mount.get("name") not in names:
                    problems.append(
                        problem(
                            (*spec_path, "templates", i, *where, "volumeMounts", k, "name"),
                            f"no volume named {mount.get('name')!r} in spec.volumes, "
                            "spec.volumeClaimTemplates or the template's volumes "
                            f"(declared: {', '.join(sorted(n for n in names if n)) or 'none'})",
                        )
                    )
    return problems

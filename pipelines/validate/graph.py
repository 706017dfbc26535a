"""The lint of what templates call and reference: DAG tasks, steps, and ``{{...}}`` in every template.

:class:`TemplateGraph` resolves each task's or step's template, checks ``depends`` (names exist, no
cycle), loops, arguments against the callee's inputs, and every ``{{...}}`` reference against what
is in scope where it is written (the rules of ``argo lint``'s ``validateDAG``/``validateSteps``/
``validateLeaf``). A task calling a template of another WorkflowTemplate (``templateRef``) is
accepted: that template is not in this document, so its outputs are not checked.
"""

from __future__ import annotations

from typing import Any

from pipelines.argo import depends
from pipelines.argo.tags import EXPRESSION, TagError, walk_tags
from pipelines.argo.vocab import ITEMS_RESULTS, LOOP_FIELDS, has_loop, template_kind
from pipelines.validate.fields import (
    FIELD_NAME,
    FIELD_NAME_MESSAGE,
    arguments_problems,
    check_hook,
    check_names,
    undefined_template,
)
from pipelines.validate.problem import Path, Problem, problem
from pipelines.validate.refs import Scope, ancestors_of, find_cycle, node_outputs

_POD_TYPES = ("container", "containerSet", "script", "resource", "data")


class TemplateGraph:
    """The templates of one WorkflowSpec, and the lint of how they call and reference each other."""

    def __init__(self, templates: list[dict[str, Any]], spec_path: Path, scope: Scope) -> None:
        self.by_name: dict[str, dict[str, Any]] = {}
        for template in templates:
            self.by_name.setdefault(template.get("name", ""), template)
        self.names = [t.get("name", "") for t in templates if t.get("name")]
        self.spec_path = spec_path
        self.globals = scope

    def lint(self, template: dict[str, Any], path: Path) -> list[Problem]:
        """Every reference problem of one template (at ``path``)."""
        if "dag" in template:
            return self._dag(template, path)
        if "steps" in template:
            return self._steps(template, path)
        return self._leaf(template, path)

    def resolve(self, holder: dict[str, Any]) -> dict[str, Any] | None:
        """The template a task, step or hook runs, or ``None`` when it is not in this document."""
        if isinstance(holder.get("inline"), dict):
            return holder["inline"]
        return self.by_name.get(holder.get("template") or "")

    def template_scope(self, template: dict[str, Any]) -> Scope:
        scope = self.globals.copy()
        scope.template = template.get("name", "")
        inputs = template.get("inputs", {})
        scope.inputs = [p["name"] for p in inputs.get("parameters", []) if p.get("name")]
        scope.artifacts = [a["name"] for a in inputs.get("artifacts", []) if a.get("name")]
        if scope.inputs:
            scope.names.add("inputs.parameters")
        scope.names |= {f"inputs.parameters.{p}" for p in scope.inputs}
        scope.names |= {f"inputs.artifacts.{a}" for a in scope.artifacts}
        return scope

    def check_tags(self, value: Any, path: Path, scope: Scope) -> list[Problem]:
        """Every ``{{...}}`` in ``value`` that cannot be read or does not resolve in ``scope``."""
        problems: list[Problem] = []
        for where, tag in walk_tags(value, path):
            if isinstance(tag, TagError):
                problems.append(problem(where, str(tag)))
            elif tag.kind != EXPRESSION and (error := scope.check(tag.body)) is not None:
                problems.append(problem(where, error))
        return problems

    def _leaf(self, template: dict[str, Any], path: Path) -> list[Problem]:
        scope = self.template_scope(template)
        scope.names |= {f"inputs.artifacts.{a}.path" for a in scope.artifacts}
        if template_kind(template) in _POD_TYPES:
            scope.names.add("pod.name")
        body = {k: v for k, v in template.items() if k not in ("name", "inputs")}
        return self.check_tags(body, path, scope)

    def _holder(self, holder: dict[str, Any], path: Path, noun: str) -> list[Problem]:
        """A task's or step's template (exactly one of template/templateRef/inline) and its loop."""
        problems: list[Problem] = []
        given = [k for k in ("template", "templateRef", "inline") if holder.get(k)]
        if not given:
            problems.append(problem(path, f"{noun} needs a template, templateRef or inline"))
        elif len(given) > 1:
            problems.append(
                problem(
                    path, f"give only one of template, templateRef, inline ({', '.join(given)})"
                )
            )
        name = holder.get("template")
        if name and "{{" not in name and name not in self.by_name:
            problems.append(problem((*path, "template"), undefined_template(name, self.names)))
        loops = [f for f in LOOP_FIELDS if holder.get(f) not in (None, "", [])]
        if len(loops) > 1:
            problems.append(
                problem(
                    path,
                    "only one of withItems, withParam, withSequence may be set "
                    f"(found {', '.join(loops)})",
                )
            )
        sequence = holder.get("withSequence") or {}
        if "count" in sequence and "end" in sequence:
            problems.append(problem((*path, "withSequence"), "give count or end, not both"))
        for hook_name, hook in (holder.get("hooks") or {}).items():
            problems += check_hook(hook, (*path, "hooks", hook_name), hook_name, self.names)
        on_exit = holder.get("onExit")
        if on_exit and on_exit not in self.by_name:
            problems.append(problem((*path, "onExit"), undefined_template(on_exit, self.names)))
        arguments = holder.get("arguments", {})
        problems += arguments_problems(arguments, (*path, "arguments"), allow_empty=False)
        callee = None if "inline" in holder else self.resolve(holder)
        if callee is not None:
            given_args = {p.get("name") for p in arguments.get("parameters", [])}
            for param in callee.get("inputs", {}).get("parameters", []):
                if any(k in param for k in ("value", "default", "valueFrom")):
                    continue
                if param.get("name") not in given_args:
                    problems.append(
                        problem(
                            (*path, "arguments"),
                            f"template {callee.get('name')!r} needs input parameter "
                            f"{param.get('name')!r}, which this {noun} does not pass",
                        )
                    )
        return problems

    def _node_scope(self, base: Scope, holder: dict[str, Any]) -> Scope:
        """``base`` plus what a task or step itself adds: its loop's item, an inline's inputs."""
        scope = base.copy()
        items = holder.get("withItems")
        if items:
            scope.loop = "known"
            for item in items:
                if isinstance(item, dict):
                    scope.names |= {f"item.{key}" for key in item}
                elif isinstance(item, list):
                    scope.names |= {f"item.[{i}]" for i in range(len(item))}
                else:
                    scope.names.add("item")
        elif holder.get("withParam"):
            scope.loop = "any"
        elif holder.get("withSequence"):
            scope.loop = "known"
            scope.names.add("item")
        inline = holder.get("inline")
        if isinstance(inline, dict):
            for param in inline.get("inputs", {}).get("parameters", []):
                scope.names.add(f"inputs.parameters.{param.get('name')}")
        return scope

    def _register(self, scope: Scope, prefix: str, holder: dict[str, Any]) -> None:
        """Put a task's or step's outputs in ``scope`` (any ``prefix.*`` when unresolvable)."""
        callee = self.resolve(holder)
        label = holder.get("template") or ("inline" if "inline" in holder else None)
        if label is None and isinstance(holder.get("templateRef"), dict):
            label = holder["templateRef"].get("template")
        name = prefix.split(".", 1)[1]
        if callee is None:
            scope.open_prefixes.add(f"{prefix}.")
            scope.tasks[name] = (label, None)
            return
        outputs = [p.get("name", "") for p in callee.get("outputs", {}).get("parameters", [])]
        scope.tasks[name] = (label, outputs)
        scope.names |= node_outputs(prefix, callee, aggregate=has_loop(holder), ancestor=False)
        scope.names |= node_outputs(prefix, callee, aggregate=False, ancestor=False)

    def _dag(self, template: dict[str, Any], path: Path) -> list[Problem]:
        """A DAG template: its tasks, their ``depends`` (names, cycle), target, and references."""
        tasks_path = (*path, "dag", "tasks")
        tasks: list[dict[str, Any]] = template["dag"].get("tasks") or []
        problems = check_names(tasks, tasks_path, "task", FIELD_NAME)
        if not tasks:
            problems.append(
                problem(tasks_path, f"DAG template {template.get('name', '')!r} has no tasks")
            )
        dag = _Dag(template, tasks, tasks_path)
        for j, task in enumerate(tasks):
            problems += self._holder(task, (*tasks_path, j), "task")
            problems += dag.task_problems(task, j)
        problems += dag.cycle_problems() + dag.target_problems(path)
        problems += self._dag_references(template, path, dag)
        return problems

    def _dag_references(self, template: dict[str, Any], path: Path, dag: _Dag) -> list[Problem]:
        """Every ``{{...}}`` of every task, against what that task can see (its ancestors)."""
        problems: list[Problem] = []
        base = self.template_scope(template)
        base.group = "tasks"
        for task in dag.tasks:
            self._register(base, f"tasks.{task.get('name', '')}", task)
        for j, task in enumerate(dag.tasks):
            task_name, where = task.get("name", ""), (*dag.tasks_path, j)
            scope = self._node_scope(base, task)
            scope.ancestors = ancestors_of(task_name, dag.graph)
            for ancestor in scope.ancestors:
                holder = dag.tasks[dag.index[ancestor]]
                scope.names.add(f"tasks.{ancestor}.status")
                callee = self.resolve(holder)
                if callee is not None:
                    scope.names |= node_outputs(
                        f"tasks.{ancestor}", callee, aggregate=has_loop(holder), ancestor=True
                    )
            if task.get("hooks"):
                scope.names.add(f"tasks.{task_name}.status")
            problems += self.check_tags(task, where, scope)
            problems += _dependency_problems(task, where, dag.index, scope.ancestors)
        problems += self.check_tags(template.get("outputs", {}), (*path, "outputs"), base)
        return problems

    def _steps(self, template: dict[str, Any], path: Path) -> list[Problem]:
        problems: list[Problem] = []
        scope = self.template_scope(template)
        scope.group = "steps"
        groups: list[list[dict[str, Any]]] = template["steps"]
        seen: set[str] = set()
        all_names = [s.get("name", "") for group in groups for s in group or []]
        for i, group in enumerate(groups):
            for k, step in enumerate(group or []):
                where = (*path, "steps", i, k)
                step_name = step.get("name", "")
                if not step_name:
                    problems.append(problem((*where, "name"), "step name is required"))
                elif not FIELD_NAME.match(step_name) or len(step_name) > 128:
                    problems.append(
                        problem(
                            (*where, "name"),
                            f"invalid step name {step_name!r}: {FIELD_NAME_MESSAGE}",
                        )
                    )
                elif step_name in seen:
                    problems.append(
                        problem((*where, "name"), f"step name {step_name!r} is not unique")
                    )
                seen.add(step_name)
                problems += self._holder(step, where, "step")
                scope.names.add(f"steps.{step_name}.status")
                if "exit" in (step.get("hooks") or {}) or step.get("onExit"):
                    self._register(scope, f"steps.{step_name}", step)
                step_scope = self._node_scope(scope, step)
                step_scope.tasks = {n: scope.tasks.get(n, (None, None)) for n in all_names}
                problems += self.check_tags(step, where, step_scope)
                self._register(scope, f"steps.{step_name}", step)
        problems += self.check_tags(template.get("outputs", {}), (*path, "outputs"), scope)
        return problems


def _dependency_problems(
    task: dict[str, Any], path: Path, index: dict[str, int], ancestors: set[str]
) -> list[Problem]:
    """A task's arguments, ``withParam`` and ``when`` read other tasks' outputs only once those
    tasks are done, i.e. only of tasks it depends on (argo lint checks arguments alone)."""
    problems: list[Problem] = []
    reads = {k: task[k] for k in ("arguments", "withParam", "when") if k in task}
    for where, found in walk_tags(reads, path):
        if isinstance(found, TagError) or found.kind == EXPRESSION:
            continue
        tag = found.body
        parts = tag.split(".")
        if len(parts) < 3 or parts[0] != "tasks" or parts[2] not in ("outputs", "exitCode", "ip"):
            continue
        ref = parts[1]
        if ref in index and ref != task.get("name") and ref not in ancestors:
            problems.append(
                problem(
                    where,
                    f"{{{{{tag}}}}} reads an output of task {ref!r}, but task "
                    f"{task.get('name')!r} does not depend on {ref!r}: add it to depends",
                )
            )
    return problems


class _Dag:
    """The dependency rules of one DAG template; :meth:`task_problems` fills :attr:`graph`.

    ``depends`` is parsed once, here, by :func:`pipelines.argo.depends.parse`: this is the one
    place that checks a dependency names a task of the DAG (the local runner relies on it).
    """

    def __init__(self, template: dict[str, Any], tasks: list[dict[str, Any]], tasks_path: Path):
        self.name = template.get("name", "")
        self.template = template
        self.tasks = tasks
        self.tasks_path = tasks_path
        self.index: dict[str, int] = {}
        for j, task in enumerate(tasks):
            self.index.setdefault(task.get("name", ""), j)
        self.known = sorted(n for n in self.index if n)
        self.using_depends = any(t.get("depends") for t in tasks)
        self.graph: dict[str, list[str]] = {}
        self.dep_field: dict[str, str] = {}

    def task_problems(self, task: dict[str, Any], j: int) -> list[Problem]:
        """How one task may combine depends, dependencies and continueOn, and what it names."""
        task_name, where = task.get("name", ""), (*self.tasks_path, j)
        problems: list[Problem] = []
        if (self.using_depends or task.get("dependencies")) and task_name[:1].isdigit():
            problems.append(
                problem(
                    (*where, "name"),
                    f"task name {task_name!r} cannot begin with a digit when depends or "
                    "dependencies are used",
                )
            )
        if self.using_depends and task.get("dependencies"):
            problems.append(
                problem(
                    (*where, "dependencies"),
                    "cannot mix 'depends' and 'dependencies' in one DAG template",
                )
            )
        if self.using_depends and "continueOn" in task:
            problems.append(
                problem(
                    (*where, "continueOn"),
                    "continueOn cannot be used with depends: use 'task.Failed' or "
                    "'task.Errored' in depends instead",
                )
            )
        field = "depends" if task.get("depends") else "dependencies"
        deps: dict[str, set[str]] = {}
        if task.get("depends"):
            try:
                deps = depends.results_by_task(depends.parse(str(task["depends"])))
            except depends.DependsError as e:
                problems.append(problem((*where, "depends"), str(e)))
        for dep in task.get("dependencies") or []:
            deps.setdefault(dep, set()).add("")
        problems += self._named_problems(deps, (*where, field))
        if task_name:
            self.graph.setdefault(task_name, list(deps))
            self.dep_field[task_name] = field
        return problems

    def _named_problems(self, deps: dict[str, set[str]], where: Path) -> list[Problem]:
        problems: list[Problem] = []
        for dep, results in deps.items():
            if dep not in self.index:
                problems.append(
                    problem(
                        where,
                        f"depends on {dep!r}, which is not a task of DAG template {self.name!r} "
                        f"(tasks: {', '.join(self.known) or 'none'})",
                    )
                )
            elif results & set(ITEMS_RESULTS) and not has_loop(self.tasks[self.index[dep]]):
                problems.append(
                    problem(
                        where,
                        f"{dep}.AnySucceeded and {dep}.AllFailed need task {dep!r} to loop "
                        "(withItems, withParam or withSequence)",
                    )
                )
        return problems

    def cycle_problems(self) -> list[Problem]:
        cycle = find_cycle(self.graph)
        if not cycle:
            return []
        first = cycle[0]
        return [
            problem(
                (*self.tasks_path, self.index[first], self.dep_field[first]),
                f"dependency cycle: {' -> '.join(cycle)}",
            )
        ]

    def target_problems(self, path: Path) -> list[Problem]:
        return [
            problem(
                (*path, "dag", "target"),
                f"target {target!r} is not a task of DAG template {self.name!r}",
            )
            for target in str(self.template["dag"].get("target") or "").split()
            if "{{" not in target and target not in self.index
        ]

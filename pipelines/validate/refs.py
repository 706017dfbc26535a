"""The pieces of the lint that read expressions: ``{{...}}`` references and DAG ``depends``.

Mirrors ``argo lint``: a reference is checked when it starts with one of Argo's variable roots
(``inputs.``, ``outputs.``, ``tasks.``, ``steps.``, ``workflow.``, ``pod.``, ``item``); anything else
(``{{retries}}``, ``{{lastRetry.exitCode}}``) is left to run time, and so are expression tags
``{{=expr}}`` (Argo's ``util/template/validate.go``: "we do not validate expression templates").
One deliberate difference: a bare ``{{item}}`` is checked too, so it is an error outside a loop.
Tags are read by :mod:`pipelines.argo.tags`, ``depends`` by :mod:`pipelines.argo.depends`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.argo.vocab import template_kind

_CHECKED_ROOTS = ("item.", "steps.", "inputs.", "outputs.", "pod.", "workflow.", "tasks.")
# Resolved at run time whatever the template says (argo lint lets them through as well).
_RUNTIME_PREFIXES = (
    "outputs.",
    "workflow.creationTimestamp",
    "workflow.scheduledTime",
    "workflow.duration",
    "tasks.name",
    "steps.name",
    "node.name",
)


@dataclass
class Scope:
    """What ``{{...}}`` may name at one place of a workflow.

    Attributes:
        names: exact tags that resolve.
        open_prefixes: tags starting with one of these resolve (e.g. ``tasks.x.`` when task x calls
            a template of another WorkflowTemplate, whose outputs cannot be known here).
        loop: ``None`` outside a loop; else ``"any"`` (withParam: any ``item.*``) or ``"known"``
            (withItems/withSequence: only the keys in ``names``).
        template: the template the reference is in (for messages).
        inputs: that template's declared input parameters.
        artifacts: that template's declared input artifacts.
        parameters: the workflow's declared parameters (``None``: any, for WorkflowTemplates).
        tasks: task or step name -> (template name or ``None``, declared output parameters or
            ``None`` when unknown), for messages.
        ancestors: the tasks the current task depends on, directly or not.
        group: ``"tasks"`` in a DAG, ``"steps"`` in a steps template, ``""`` elsewhere.
    """

    names: set[str] = field(default_factory=set)
    open_prefixes: set[str] = field(default_factory=set)
    loop: str | None = None
    template: str = ""
    inputs: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    parameters: list[str] | None = None
    tasks: dict[str, tuple[str | None, list[str] | None]] = field(default_factory=dict)
    ancestors: set[str] = field(default_factory=set)
    group: str = ""

    def copy(self) -> Scope:
        return Scope(
            names=set(self.names),
            open_prefixes=set(self.open_prefixes),
            loop=self.loop,
            template=self.template,
            inputs=list(self.inputs),
            artifacts=list(self.artifacts),
            parameters=None if self.parameters is None else list(self.parameters),
            tasks=dict(self.tasks),
            ancestors=set(self.ancestors),
            group=self.group,
        )

    def check(self, tag: str) -> str | None:
        """``None`` when the simple tag ``{{tag}}`` resolves here, else why it does not."""
        if tag == "item" or tag.startswith("item."):
            return self._check_item(tag)
        if not tag.startswith(_CHECKED_ROOTS) or tag in self.names:
            return None
        if tag.startswith(_RUNTIME_PREFIXES) or tag.startswith(tuple(self.open_prefixes)):
            return None
        return self._explain(tag)

    def _check_item(self, tag: str) -> str | None:
        if self.loop is None:
            return (
                f"{{{{{tag}}}}} used outside a loop: only a task or step with withItems, "
                "withParam or withSequence has an item"
            )
        if self.loop == "any" or tag == "item" or tag in self.names:
            return None
        keys = sorted(n for n in self.names if n == "item" or n.startswith("item."))
        return f"{{{{{tag}}}}} is not a key of this loop's items (items have: {_names(keys)})"

    def _explain(self, tag: str) -> str:
        parts = tag.split(".")
        ref = f"{{{{{tag}}}}}"
        if not self.template and parts[0] in ("inputs", "outputs", "tasks", "steps", "pod"):
            return f"{ref}: only valid inside a template, not in a workflow-level field"
        if parts[0] == "inputs" and len(parts) >= 3 and parts[1] in ("parameters", "artifacts"):
            declared = self.inputs if parts[1] == "parameters" else self.artifacts
            kind = "parameter" if parts[1] == "parameters" else "artifact"
            if parts[2] not in declared:
                return (
                    f"{ref}: template {self.template!r} declares no input {kind} {parts[2]!r} "
                    f"(declared: {_names(declared)})"
                )
        if parts[0] == "workflow" and len(parts) >= 3 and parts[1] == "parameters":
            return (
                f"{ref}: workflow parameter {parts[2]!r} is not declared in "
                f"spec.arguments.parameters (declared: {_names(self.parameters or [])})"
            )
        if parts[0] in ("tasks", "steps") and len(parts) >= 2:
            return self._explain_node(ref, parts)
        return f"cannot resolve {ref}"

    def _explain_node(self, ref: str, parts: list[str]) -> str:
        noun = "task" if parts[0] == "tasks" else "step"
        name = parts[1]
        if not self.group:
            kind = "DAG" if parts[0] == "tasks" else "steps"
            return (
                f"{ref}: template {self.template!r} is not a {kind} template; only the {noun}s "
                f"of a {kind} template can refer to {noun}s (pass it in as an input parameter)"
            )
        if parts[0] != self.group or name not in self.tasks:
            where = "DAG" if self.group == "tasks" else "steps"
            known = sorted(self.tasks) if parts[0] == self.group else []
            return (
                f"{ref}: no {noun} named {name!r} in {where} template {self.template!r} "
                f"({noun}s: {_names(known)})"
            )
        template, outputs = self.tasks[name]
        if (
            parts[2:4] == ["outputs", "parameters"]
            and len(parts) >= 5
            and outputs is not None
            and parts[4] not in outputs
        ):
            return (
                f"{ref}: {noun} {name!r} (template {template!r}) declares no output "
                f"parameter {parts[4]!r} (declared: {_names(outputs)})"
            )
        if parts[2:] == ["status"] and name not in self.ancestors:
            return f"{ref}: {noun} {name!r} is not a dependency of this {noun}; add it to depends"
        return f"cannot resolve {ref}"


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle ``[a, b, a]`` in ``{task: [tasks it depends on]}``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def ancestors_of(task: str, graph: dict[str, list[str]]) -> set[str]:
    """Every task ``task`` depends on, directly or through others (cycles tolerated)."""
    seen: set[str] = set()
    todo = list(graph.get(task, []))
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in graph:
            continue
        seen.add(dep)
        todo.extend(graph[dep])
    return seen


_HAS_RESULT = ("container", "containerSet", "script", "data", "http", "plugin")


def workflow_scope(spec: dict[str, Any], metadata: dict[str, Any], any_parameter: bool) -> Scope:
    """The global variables of a workflow: ``workflow.*`` and the global outputs.

    Args:
        spec: the WorkflowSpec.
        metadata: the document's metadata (its labels and annotations are variables too).
        any_parameter: accept any ``workflow.parameters.*`` (a WorkflowTemplate's parameters may
            come from the Workflow that uses it).
    """
    scope = Scope()
    scope.names = {
        f"workflow.{name}"
        for name in (
            "name",
            "namespace",
            "mainEntrypoint",
            "serviceAccountName",
            "uid",
            "status",
            "failures",
            "annotations",
            "annotations.json",
            "labels",
            "labels.json",
        )
    }
    params = [p["name"] for p in spec.get("arguments", {}).get("parameters", []) if p.get("name")]
    if params:
        scope.names |= {"workflow.parameters", "workflow.parameters.json"}
        scope.names |= {f"workflow.parameters.{p}" for p in params}
    if "priority" in spec:
        scope.names.add("workflow.priority")
    scope.parameters = params
    if any_parameter:
        scope.parameters = None
        scope.open_prefixes.add("workflow.parameters")
    sources = [metadata, spec.get("workflowMetadata") or {}]
    for source in sources:
        for key in source.get("annotations") or {}:
            scope.names.add(f"workflow.annotations.{key}")
        for key_field in ("labels", "labelsFrom"):
            for key in source.get(key_field) or {}:
                scope.names.add(f"workflow.labels.{key}")
    for template in spec.get("templates", []):
        outputs = template.get("outputs", {})
        for kind in ("parameters", "artifacts"):
            for out in outputs.get(kind, []):
                global_name = out.get("globalName")
                if global_name and "{{" in global_name:
                    scope.open_prefixes.add(f"workflow.outputs.{kind}.")
                elif global_name:
                    scope.names.add(f"workflow.outputs.{kind}.{global_name}")
    return scope


def node_outputs(
    prefix: str, template: dict[str, Any], aggregate: bool, ancestor: bool
) -> set[str]:
    """What ``{{tasks.X...}}``/``{{steps.X...}}`` may name for a node running ``template``."""
    names = {f"{prefix}.{key}" for key in ("id", "startedAt", "finishedAt", "hostNodeName")}
    kind = template_kind(template)
    if template.get("daemon"):
        names.add(f"{prefix}.ip")
    if kind in _HAS_RESULT:
        names |= {f"{prefix}.outputs.result", f"{prefix}.exitCode"}
    outputs = template.get("outputs", {})
    for kind_name in ("parameters", "artifacts"):
        for out in outputs.get(kind_name, []):
            names.add(f"{prefix}.outputs.{kind_name}.{out.get('name')}")
    if aggregate:
        names.add(f"{prefix}.outputs.parameters")
        if kind in ("script", "containerSet"):
            names |= {f"{prefix}.outputs.result", f"{prefix}.exitCode"}
    if ancestor:
        names.add(f"{prefix}.status")
    return names

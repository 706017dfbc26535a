"""One task or step of a DAG or steps template: its loop (withItems/withParam/withSequence), its
``when``, its arguments, and the values its siblings may read once it is done.

:class:`Fanout` sits between the scheduling of a template's children (the engine, which owns it)
and the run of the template each item names (the engine's ``execute``, handed in).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from pipelines.argo.expr import ExprError, eval_expr, eval_value
from pipelines.argo.tags import substitute
from pipelines.argo.vocab import FAILED, NodePhase
from pipelines.backends.local.records import Node, text_of
from pipelines.backends.local.slots import OrderedSlots
from pipelines.backends.local.state import RunState

# Runs a template as a node with these arguments (the engine's ``execute``).
Execute = Callable[[Node, str, Mapping[str, str]], None]


def expression_evaluator(values: Mapping[str, str], where: str) -> Callable[[str], str]:
    """How ``{{=expression}}`` tags are read here: the expr subset over the same variables."""
    return lambda expression: eval_value(expression, values, where)


class Fanout:
    """Runs one task or step, expanded over its items.

    Args:
        state: the run's shared state (nodes, phases, stop flag, pod slots).
        execute: runs the template an item names (the engine's).
    """

    def __init__(self, state: RunState, execute: Execute):
        self.state = state
        self.execute = execute

    def run_task(
        self,
        node: Node,
        task: Mapping[str, Any],
        scope: dict[str, str],
        sem: OrderedSlots | None,
    ) -> None:
        """Run ``task`` as ``node``: once, or over its items as a task group (``scope``: what
        its arguments may read; ``sem``: the parent template's ``parallelism``)."""
        where = f"task {node.name}"
        try:
            items = self._items(task, scope, where)
        except ExprError as e:
            self.state.set_phase(node, NodePhase.ERROR, str(e))
            return
        if items is None:
            self._one(node, task, scope, None, sem, sem.ticket() if sem else None)
            return
        if not items:  # Argo's expandTask: a loop over nothing is one Skipped node, no group
            node.kind = "Skipped"
            self.state.set_phase(node, NodePhase.SKIPPED, "Skipped, empty params")
            return
        self._group(node, task, scope, items, sem)

    def _group(
        self,
        node: Node,
        task: Mapping[str, Any],
        scope: dict[str, str],
        items: list[Any],
        sem: OrderedSlots | None,
    ) -> None:
        """One child per item, all created before any runs; the group fails as its last failure."""
        state = self.state
        node.kind = "TaskGroup"
        for i in range(len(items)):  # every child exists before the group runs
            node.children.append(state.new_node(f"{node.name}({i})", node.template, "Pending"))
        state.set_phase(node, NodePhase.RUNNING)
        tickets = [sem.ticket() if sem else None for _ in items]  # the items' order: Argo's
        if state.pod_slots is not None:  # and the same order for the workflow's pods
            for kid in node.children:
                kid.ticket = state.pod_slots.ticket()
        kids = [
            state.spawn(partial(self._one, kid, task, scope, item, sem, ticket))
            for kid, item, ticket in zip(node.children, items, tickets, strict=True)
        ]
        for th in kids:
            th.join()
        phase = NodePhase.SUCCEEDED
        for kid in node.children:
            if kid.phase in FAILED:
                phase = kid.phase
        state.set_phase(node, phase)

    def _one(
        self,
        node: Node,
        task: Mapping[str, Any],
        scope: dict[str, str],
        item: Any,
        sem: OrderedSlots | None,
        ticket: int | None,
    ) -> None:
        try:
            self._one_in_turn(node, task, scope, item, sem, ticket)
        finally:
            if sem is not None and ticket is not None:
                sem.cancel(ticket)  # a no-op once it was admitted
            if self.state.pod_slots is not None and node.ticket is not None:
                self.state.pod_slots.cancel(node.ticket)  # it ran no pod (skipped, a DAG, an error)
                node.ticket = None

    def _one_in_turn(
        self,
        node: Node,
        task: Mapping[str, Any],
        scope: dict[str, str],
        item: Any,
        sem: OrderedSlots | None,
        ticket: int | None,
    ) -> None:
        where = f"task {node.name}"
        local = dict(scope)
        if item is not None:
            local["item"] = text_of(item)
            if isinstance(item, dict):
                for k, v in item.items():
                    local[f"item.{k}"] = text_of(v)
        try:
            when = task.get("when")
            if when:
                cond = substitute(
                    str(when), local.get, f"{where} when", expression_evaluator(local, where)
                )
                if not eval_expr(cond, {}, f"{where} when", bare_words=True):
                    self.state.set_phase(node, NodePhase.SKIPPED, f"when '{cond}' evaluated false")
                    return
            evaluate = expression_evaluator(local, f"{where} arguments")
            args = {
                p["name"]: substitute(
                    text_of(p.get("value", "")), local.get, f"{where} arguments", evaluate
                )
                for p in (task.get("arguments") or {}).get("parameters") or []
            }
        except ExprError as e:
            self.state.set_phase(node, NodePhase.ERROR, str(e))
            return
        node.inputs = dict(args)  # known while it waits for a slot (the template's come on run)
        if sem is not None and ticket is not None:
            sem.acquire(ticket)
        try:
            if self.state.stopping.is_set():
                self.state.set_phase(node, NodePhase.OMITTED, f"not run: {self.state.stop_reason}")
                return
            self.execute(node, task["template"], args)
        finally:
            if sem is not None:
                sem.release()

    def _items(
        self, task: Mapping[str, Any], scope: dict[str, str], where: str
    ) -> list[Any] | None:
        if "withItems" in task:
            return list(task["withItems"])
        if "withParam" in task:
            raw = substitute(
                str(task["withParam"]),
                scope.get,
                f"{where} withParam",
                expression_evaluator(scope, f"{where} withParam"),
            )
            try:
                items = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ExprError(f"{where} withParam: not a JSON list: {raw[:200]!r}") from e
            if not isinstance(items, list):
                raise ExprError(f"{where} withParam: expected a JSON list, got {raw[:200]!r}")
            return items
        if "withSequence" in task:
            seq = {
                k: substitute(text_of(v), scope.get, f"{where} withSequence")
                for k, v in task["withSequence"].items()
            }
            start = int(seq.get("start", 0))
            end = int(seq["end"]) if "end" in seq else start + int(seq.get("count", 0)) - 1
            step = 1 if end >= start else -1
            fmt = seq.get("format")
            return [fmt % i if fmt else str(i) for i in range(start, end + step, step)]
        return None

    def scope(self, parent: Node, kind: str, results: Mapping[str, Node]) -> dict[str, str]:
        """Values a child's arguments may use: workflow, the parent's inputs, finished siblings."""
        s = self.state.globals()
        for k, v in parent.inputs.items():
            s[f"inputs.parameters.{k}"] = v
        for name, n in results.items():
            pre = f"{kind}.{name}"
            s[f"{pre}.status"] = n.phase
            s[f"{pre}.id"] = n.name
            if n.kind == "TaskGroup":
                kids = [k for k in n.children if k.phase == NodePhase.SUCCEEDED]
                keys = {key for k in kids for key in k.outputs}
                for key in keys:
                    s[f"{pre}.outputs.parameters.{key}"] = json.dumps(
                        [k.outputs.get(key) for k in kids]
                    )
                s[f"{pre}.outputs.result"] = json.dumps([_json_or_text(k.result) for k in kids])
                s[f"{pre}.outputs.parameters"] = json.dumps([k.outputs for k in kids])
                continue
            if n.outputs:
                s[f"{pre}.outputs.parameters"] = json.dumps(n.outputs)
            for key, v in n.outputs.items():
                s[f"{pre}.outputs.parameters.{key}"] = v
            if n.result is not None:
                s[f"{pre}.outputs.result"] = n.result
            if n.exit_code is not None:
                s[f"{pre}.exitCode"] = str(n.exit_code)
        return s


def _json_or_text(value: str | None) -> Any:
    """An aggregated result: a JSON object or list as such (as Argo aggregates them), else text."""
    if value and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value

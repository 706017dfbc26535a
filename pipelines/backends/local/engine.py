"""The local executor: templates, DAGs, steps, fan-out and the exit handler, one thread per node.

This module decides what runs when, with Argo's semantics for ``depends``, ``when``, parallelism and
phases; :mod:`pipelines.backends.local.retry` runs one step with its retries.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from pipelines.argo import depends
from pipelines.argo.expr import ExprError
from pipelines.argo.tags import substitute
from pipelines.argo.vocab import DONE, FAILED, plain_dependency_results, task_results
from pipelines.backends.local.fanout import Fanout
from pipelines.backends.local.jobset import JobSetRunner
from pipelines.backends.local.model import (
    Node,
    Options,
    continues_on,
    iso,
    text_of,
    trial_templates,
)
from pipelines.backends.local.pod import ProcessTable
from pipelines.backends.local.slots import OrderedSlots

__all__ = ["Engine", "Node", "Options"]


class Engine(Fanout, JobSetRunner):
    """Runs one workflow: :meth:`run_template` for the entrypoint, then the exit handler; :meth:`stop`."""

    def __init__(self, manifest: Mapping[str, Any], name: str, opts: Options):
        self.spec: dict[str, Any] = dict(manifest.get("spec") or {})
        self.templates = {t["name"]: t for t in self.spec.get("templates") or []}
        self.name = name
        self.namespace = str((manifest.get("metadata") or {}).get("namespace") or "default")
        self.uid = str(uuid.uuid4())
        self.opts = opts
        self.status = "Running"
        self.started = time.time()
        self.finished: float | None = None
        self.nodes: list[Node] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.table = ProcessTable()
        self.stopping = threading.Event()
        self.stop_reason = ""
        par = self.spec.get("parallelism")
        self.pods = OrderedSlots(int(par)) if par else None  # pods start in creation order
        self.train_durations: list[float] = []
        self.listeners: list[Callable[[Node], None]] = []
        self.claims = self._volume_dirs(self.spec.get("volumes") or [], "workflow")
        self.chaos_templates = trial_templates(self.templates.values())

    # --- bookkeeping ------------------------------------------------------------------------------

    def new_node(self, name: str, template: str, kind: str, **kw: Any) -> Node:
        node = Node(name=name, template=template, kind=kind, **kw)
        with self.lock:
            self.nodes.append(node)
        return node

    def set_phase(self, node: Node, phase: str, message: str = "") -> None:
        with self.changed:
            node.phase = phase
            if message or phase == "Succeeded":
                node.message = message
            if phase == "Running" and node.started is None:
                node.started = time.time()
            if phase in DONE:
                node.finished = time.time()
            self.changed.notify_all()
        for fn in self.listeners:
            fn(node)

    def stop(self, reason: str) -> None:
        """Stop scheduling and stop every running step (Ctrl-C, deadline)."""
        self.stop_reason = self.stop_reason or reason
        self.stopping.set()
        self.table.stop_all(self.opts.stop_grace)
        with self.changed:
            self.changed.notify_all()

    def spawn(self, fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t

    # --- the run ----------------------------------------------------------------------------------

    def run_template(self, template: str, node_name: str, prefix: str) -> Node:
        """Run a top-level template (the entrypoint or the exit handler) to its end.

        The workflow's parameters are its arguments, as Argo passes them to the entrypoint.
        """
        node = self.new_node(node_name, template, "Pending", prefix=prefix)
        self.execute(node, template, dict(self.opts.parameters))
        return node

    def globals(self) -> dict[str, str]:
        g = {
            "workflow.name": self.name,
            "workflow.namespace": self.namespace,
            "workflow.uid": self.uid,
            "workflow.status": self.status,
            "workflow.duration": f"{time.time() - self.started:.3f}",
            "workflow.creationTimestamp": iso(self.started) or "",
            "workflow.serviceAccountName": str(self.spec.get("serviceAccountName") or ""),
            "workflow.failures": json.dumps(
                [
                    {
                        "displayName": n.name,
                        "message": n.message,
                        "templateName": n.template,
                        "phase": n.phase,
                        "podName": n.name,
                        "finishedAt": iso(n.finished),
                    }
                    for n in self.nodes
                    if n.kind == "Pod" and n.phase in FAILED
                ]
            ),
        }
        for k, v in self.opts.parameters.items():
            g[f"workflow.parameters.{k}"] = v
        return g

    def execute(self, node: Node, template_name: str, arguments: Mapping[str, str]) -> None:
        """Resolve the template's inputs and run it as ``node``; always leaves the node done."""
        t = self.templates[template_name]
        if self.pods is not None and node.ticket is not None and not _runs_a_pod(t):
            self.pods.cancel(node.ticket)  # a DAG or steps item: its own pods queue, not it
            node.ticket = None
        try:
            node.inputs = self._inputs(t, arguments)
            if "dag" in t:
                node.kind = "DAG"
                self.set_phase(node, "Running")
                self._dag(node, t)
            elif "steps" in t:
                node.kind = "Steps"
                self.set_phase(node, "Running")
                self._steps(node, t)
            elif "resource" in t:
                node.kind = "Pod"
                self._resource(node, t)
            else:
                node.kind = "Pod"
                self._pod(node, t)
        except ExprError as e:
            self.set_phase(node, "Error", str(e))
        except Exception as e:  # a bug here must not hang the run: the node errors, the run ends
            self.set_phase(node, "Error", f"local backend error: {type(e).__name__}: {e}")

    def _inputs(self, t: Mapping[str, Any], arguments: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for p in (t.get("inputs") or {}).get("parameters") or []:
            name = p["name"]
            if name in arguments:
                values[name] = arguments[name]
            elif "value" in p:
                values[name] = text_of(p["value"])
            elif "default" in p:
                values[name] = text_of(p["default"])
            else:
                raise ExprError(
                    f"template {t['name']}: input parameter {name!r} has no argument and no default"
                )
            if name not in arguments:
                values[name] = substitute(values[name], self.globals().get, f"{t['name']}.inputs")
        return values

    # --- DAG ----------------------------------------------------------------------------------------

    def _dag(self, node: Node, t: Mapping[str, Any]) -> None:
        tasks = {task["name"]: task for task in t["dag"]["tasks"]}
        # the validator ran first: every depends parses and names a task of this DAG
        trees = {name: depends.of_task(task) for name, task in tasks.items()}
        deps = {name: depends.task_names(tree) for name, tree in trees.items()}
        results: dict[str, Node] = {}
        sem = _semaphore(t.get("parallelism"))
        pending = list(tasks)
        threads: list[threading.Thread] = []
        while True:
            with self.changed:
                for name in list(pending):
                    if not all(d in results and results[d].done for d in deps[name]):
                        continue
                    pending.remove(name)
                    task = tasks[name]
                    child = self.new_node(
                        _child_name(node, name), task.get("template", ""), "Pending"
                    )
                    node.children.append(child)
                    results[name] = child
                    if self.stopping.is_set():
                        self.set_phase(child, "Omitted", f"not run: {self.stop_reason}")
                    elif not _depends_ok(trees[name], tasks, results):
                        self.set_phase(child, "Omitted", "omitted: depends condition not met")
                    else:
                        scope = self._scope(node, "tasks", results)
                        threads.append(self.spawn(partial(self._task, child, task, scope, sem)))
                if not pending and all(r.done for r in results.values()):
                    break
                self.changed.wait(timeout=1.0)
        for th in threads:
            th.join()
        leaves = [n for n in tasks if not any(n in deps[o] for o in tasks)]
        phase = "Succeeded"
        for leaf in leaves:
            branch = self._branch_phase(leaf, deps, results)
            if branch in FAILED and not continues_on(tasks[leaf], branch):
                phase = branch
                break
        self.set_phase(node, phase, "" if phase == "Succeeded" else "child failed")

    def _branch_phase(
        self, name: str, deps: Mapping[str, list[str]], results: Mapping[str, Node]
    ) -> str:
        node = results[name]
        if node.phase != "Omitted":
            return node.phase
        inherited = [self._branch_phase(d, deps, results) for d in deps[name]]
        return next((p for p in inherited if p in FAILED), "Succeeded")

    # --- steps --------------------------------------------------------------------------------------

    def _steps(self, node: Node, t: Mapping[str, Any]) -> None:
        results: dict[str, Node] = {}
        sem = _semaphore(t.get("parallelism"))
        for group in t["steps"]:
            scope = self._scope(node, "steps", results)
            threads = []
            for step in group:
                child = self.new_node(_child_name(node, step["name"]), step["template"], "Pending")
                node.children.append(child)
                results[step["name"]] = child
                if self.stopping.is_set():
                    self.set_phase(child, "Omitted", f"not run: {self.stop_reason}")
                    continue
                threads.append(self.spawn(partial(self._task, child, step, scope, sem)))
            for th in threads:
                th.join()
            failed = [
                (s, results[s["name"]])
                for s in group
                if results[s["name"]].phase in FAILED
                and not continues_on(s, results[s["name"]].phase)
            ]
            if failed:
                self.set_phase(node, failed[0][1].phase, f"child {failed[0][0]['name']} failed")
                return
        self.set_phase(node, "Succeeded")


def _runs_a_pod(template: Mapping[str, Any]) -> bool:
    return "dag" not in template and "steps" not in template


def _semaphore(value: Any) -> OrderedSlots | None:
    return OrderedSlots(int(value)) if value else None


def _depends_ok(
    tree: depends.Depends | None,
    tasks: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, Node],
) -> bool:
    """Argo's ``evaluateDependsLogic`` over the finished dependencies' TaskResults."""

    def holds(ref: depends.Ref) -> bool:
        node = results[ref.task]
        children = [k.phase for k in node.children] if node.kind == "TaskGroup" else None
        held = task_results(node.phase, children)
        if ref.result is not None:
            return ref.result in held
        return bool(held & set(plain_dependency_results(tasks[ref.task].get("continueOn"))))

    return depends.evaluate(tree, holds)


def _child_name(parent: Node, name: str) -> str:
    return (f"{parent.name}." if parent.prefix is None else parent.prefix) + name

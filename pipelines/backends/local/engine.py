"""The local executor: templates, DAGs, steps and the exit handler, one thread per node.

This module decides what runs when, with Argo's semantics for ``depends``, ``when``, parallelism and
phases. The :class:`Engine` is composed of parts that each get the run's shared
:class:`~pipelines.backends.local.state.RunState`:

* a :class:`~.fanout.Fanout` runs one task or step over its items, and calls back
  :meth:`Engine.execute` for the template each item names;
* a :class:`~.retry.PodRunner` runs a container or script template with its retries, and a
  :class:`~.jobset.JobSetRunner` a ``resource`` template's JobSet;
* both make their pods with one :class:`~.pods.PodBuilder` over the run's
  :class:`~.launcher.PodLauncher` (a process of this project, or the built image) and share one
  :class:`~.chaos.Chaos` (the injected preemptions).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import partial
from typing import Any

from pipelines.argo import depends
from pipelines.argo.expr import ExprError
from pipelines.argo.tags import substitute
from pipelines.argo.vocab import FAILED, NodePhase, plain_dependency_results, task_results
from pipelines.backends.local.chaos import Chaos
from pipelines.backends.local.fanout import Fanout
from pipelines.backends.local.image import ImageLauncher
from pipelines.backends.local.jobset import JobSetRunner
from pipelines.backends.local.launcher import PodLauncher, ProcessLauncher
from pipelines.backends.local.pods import PodBuilder
from pipelines.backends.local.records import (
    Node,
    Options,
    continues_on,
    text_of,
    trial_templates,
)
from pipelines.backends.local.retry import PodRunner
from pipelines.backends.local.slots import OrderedSlots
from pipelines.backends.local.state import RunState

__all__ = ["Engine", "Node", "Options", "launcher_for"]


def launcher_for(opts: Options) -> PodLauncher:
    """The run's pod runtime: the built image (``RUNTIME=image``) or this project's processes."""
    if opts.image is not None:
        return ImageLauncher(opts.image)
    return ProcessLauncher(base_env=opts.base_env, cwd=opts.cwd)


class Engine:
    """Runs one workflow: :meth:`run_template` for the entrypoint, then the exit handler.

    Owns the run's :attr:`state` (what the live view and ``run.json`` read; ``state.stop`` stops
    it), the :attr:`fanout`, the :attr:`pods` runner and the :attr:`jobsets` runner.
    """

    def __init__(self, manifest: Mapping[str, Any], name: str, opts: Options):
        self.state = RunState(manifest, name, opts)
        chaos = Chaos(
            probability=opts.chaos,
            seed=opts.seed,
            window=opts.chaos_window,
            templates=trial_templates(self.state.templates.values()),
        )
        builder = PodBuilder(self.state, launcher_for(opts))
        self.pods = PodRunner(self.state, builder, chaos)
        self.jobsets = JobSetRunner(self.state, builder, chaos)
        self.fanout = Fanout(self.state, self.execute)

    def run_template(self, template: str, node_name: str, prefix: str) -> Node:
        """Run a top-level template (the entrypoint or the exit handler) to its end.

        The workflow's parameters are its arguments, as Argo passes them to the entrypoint.
        """
        node = self.state.new_node(node_name, template, "Pending", prefix=prefix)
        self.execute(node, template, dict(self.state.opts.parameters))
        return node

    def execute(self, node: Node, template_name: str, arguments: Mapping[str, str]) -> None:
        """Resolve the template's inputs and run it as ``node``; always leaves the node done."""
        state = self.state
        t = state.templates[template_name]
        if state.pod_slots is not None and node.ticket is not None and not _runs_a_pod(t):
            state.pod_slots.cancel(node.ticket)  # a DAG or steps item: its own pods queue, not it
            node.ticket = None
        try:
            node.inputs = self._inputs(t, arguments)
            if "dag" in t:
                node.kind = "DAG"
                state.set_phase(node, NodePhase.RUNNING)
                self._dag(node, t)
            elif "steps" in t:
                node.kind = "Steps"
                state.set_phase(node, NodePhase.RUNNING)
                self._steps(node, t)
            elif "resource" in t:
                node.kind = "Pod"
                self.jobsets.run(node, t)
            else:
                node.kind = "Pod"
                self.pods.run(node, t)
        except ExprError as e:
            state.set_phase(node, NodePhase.ERROR, str(e))
        except Exception as e:  # a bug here must not hang the run: the node errors, the run ends
            state.set_phase(node, NodePhase.ERROR, f"local backend error: {type(e).__name__}: {e}")

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
                values[name] = substitute(
                    values[name], self.state.globals().get, f"{t['name']}.inputs"
                )
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
        state = self.state
        while True:
            with state.changed:
                for name in list(pending):
                    if not all(d in results and results[d].done for d in deps[name]):
                        continue
                    pending.remove(name)
                    child = self._child(node, name, tasks[name].get("template", ""), results)
                    if state.stopping.is_set():
                        self._omit(child, f"not run: {state.stop_reason}")
                    elif not _depends_ok(trees[name], tasks, results):
                        self._omit(child, "omitted: depends condition not met")
                    else:
                        scope = self.fanout.scope(node, "tasks", results)
                        run = partial(self.fanout.run_task, child, tasks[name], scope, sem)
                        threads.append(state.spawn(run))
                if not pending and all(r.done for r in results.values()):
                    break
                state.changed.wait(timeout=1.0)
        for th in threads:
            th.join()
        phase = _dag_phase(tasks, deps, results)
        state.set_phase(node, phase, "" if phase == NodePhase.SUCCEEDED else "child failed")

    def _child(self, parent: Node, name: str, template: str, results: dict[str, Node]) -> Node:
        """A new child node of ``parent`` for its task or step ``name``, pending."""
        child = self.state.new_node(_child_name(parent, name), template, "Pending")
        parent.children.append(child)
        results[name] = child
        return child

    def _omit(self, node: Node, why: str) -> None:
        self.state.set_phase(node, NodePhase.OMITTED, why)

    # --- steps --------------------------------------------------------------------------------------

    def _steps(self, node: Node, t: Mapping[str, Any]) -> None:
        results: dict[str, Node] = {}
        sem = _semaphore(t.get("parallelism"))
        state = self.state
        for group in t["steps"]:
            scope = self.fanout.scope(node, "steps", results)
            threads = []
            for step in group:
                child = self._child(node, step["name"], step["template"], results)
                if state.stopping.is_set():
                    self._omit(child, f"not run: {state.stop_reason}")
                    continue
                run = partial(self.fanout.run_task, child, step, scope, sem)
                threads.append(state.spawn(run))
            for th in threads:
                th.join()
            failed = [
                (s, results[s["name"]])
                for s in group
                if results[s["name"]].phase in FAILED
                and not continues_on(s, results[s["name"]].phase)
            ]
            if failed:
                state.set_phase(node, failed[0][1].phase, f"child {failed[0][0]['name']} failed")
                return
        state.set_phase(node, NodePhase.SUCCEEDED)


def _dag_phase(
    tasks: Mapping[str, Mapping[str, Any]],
    deps: Mapping[str, list[str]],
    results: Mapping[str, Node],
) -> NodePhase:
    """A finished DAG's phase: the first leaf branch that failed (and does not continue on it)."""
    leaves = [n for n in tasks if not any(n in deps[o] for o in tasks)]
    for leaf in leaves:
        branch = _branch_phase(leaf, deps, results)
        if branch in FAILED and not continues_on(tasks[leaf], branch):
            return branch
    return NodePhase.SUCCEEDED


def _branch_phase(
    name: str, deps: Mapping[str, list[str]], results: Mapping[str, Node]
) -> NodePhase:
    """A task's phase; an omitted task's is the first failure among its dependencies' branches."""
    node = results[name]
    if node.phase != NodePhase.OMITTED:
        return node.phase
    inherited = [_branch_phase(d, deps, results) for d in deps[name]]
    return next((p for p in inherited if p in FAILED), NodePhase.SUCCEEDED)


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

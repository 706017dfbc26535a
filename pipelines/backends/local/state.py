"""The state one local run shares between its parts: its nodes, phases, stop flag and pod slots.

The engine (what runs when), the fan-out (one task over its items), the pod runner (one step with
its retries) and the JobSet runner each get this object; none of them reaches into another.
The live view and ``run.json`` read it too.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipelines.argo.vocab import DONE, FAILED, NodePhase
from pipelines.backends.local.pod import ProcessTable
from pipelines.backends.local.records import Node, Options, iso, safe_name
from pipelines.backends.local.slots import OrderedSlots


class RunState:
    """One workflow's run: its nodes and phases, ``{{workflow.*}}``, the stop flag, the pod slots."""

    def __init__(self, manifest: Mapping[str, Any], name: str, opts: Options):
        self.spec: dict[str, Any] = dict(manifest.get("spec") or {})
        self.templates = {t["name"]: t for t in self.spec.get("templates") or []}
        self.name = name
        self.namespace = str((manifest.get("metadata") or {}).get("namespace") or "default")
        self.uid = str(uuid.uuid4())
        self.opts = opts
        self.status: NodePhase = NodePhase.RUNNING
        self.started = time.time()
        self.finished: float | None = None
        self.nodes: list[Node] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.table = ProcessTable()
        self.stopping = threading.Event()
        self.stop_reason = ""
        par = self.spec.get("parallelism")
        self.pod_slots = OrderedSlots(int(par)) if par else None  # pods start in creation order
        self.listeners: list[Callable[[Node], None]] = []
        self.claims = self.volume_dirs(self.spec.get("volumes") or [], "workflow")

    # --- nodes -------------------------------------------------------------------------------------

    def new_node(self, name: str, template: str, kind: str, **kw: Any) -> Node:
        node = Node(name=name, template=template, kind=kind, **kw)
        with self.lock:
            self.nodes.append(node)
        return node

    def set_phase(self, node: Node, phase: NodePhase, message: str = "") -> None:
        with self.changed:
            node.phase = phase
            if message or phase == NodePhase.SUCCEEDED:
                node.message = message
            if phase == NodePhase.RUNNING and node.started is None:
                node.started = time.time()
            if phase in DONE:
                node.finished = time.time()
            self.changed.notify_all()
        for fn in self.listeners:
            fn(node)

    def spawn(self, fn: Callable[[], None]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        return t

    def stop(self, reason: str) -> None:
        """Stop scheduling and stop every running step (Ctrl-C, deadline)."""
        self.stop_reason = self.stop_reason or reason
        self.stopping.set()
        self.table.stop_all(self.opts.stop_grace)
        with self.changed:
            self.changed.notify_all()

    # --- what templates may read -------------------------------------------------------------------

    def globals(self) -> dict[str, str]:
        """``{{workflow.*}}`` now."""
        g = {
            "workflow.name": self.name,
            "workflow.namespace": self.namespace,
            "workflow.uid": self.uid,
            "workflow.status": str(self.status),
            "workflow.duration": f"{time.time() - self.started:.3f}",
            "workflow.creationTimestamp": iso(self.started) or "",
            "workflow.serviceAccountName": str(self.spec.get("serviceAccountName") or ""),
            "workflow.failures": json.dumps(self._failures()),
        }
        for k, v in self.opts.parameters.items():
            g[f"workflow.parameters.{k}"] = v
        return g

    def _failures(self) -> list[dict[str, Any]]:
        return [
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

    def pod_vars(self, node: Node, attempt_no: int) -> dict[str, str]:
        """What a pod's template may read: the globals, its inputs, ``{{retries}}``, its names."""
        v = self.globals()
        for k, val in node.inputs.items():
            v[f"inputs.parameters.{k}"] = val
        v["retries"] = str(attempt_no)
        v["pod.name"] = f"{self.name}-{safe_name(node.name)}-{attempt_no}"
        v["node.name"] = node.name
        return v

    # --- resources ---------------------------------------------------------------------------------

    def take_pod_slot(self, node: Node) -> None:
        """Wait for one of the workflow's ``parallelism`` pods (none: no limit): a fan-out's items
        in their order (the ticket the fan-out gave the node), a retry at the back of the queue."""
        if self.pod_slots is None:
            return
        ticket = node.ticket if node.ticket is not None else self.pod_slots.ticket()
        node.ticket = None
        self.pod_slots.acquire(ticket)

    def release_pod_slot(self) -> None:
        if self.pod_slots is not None:
            self.pod_slots.release()

    def volume_dirs(self, volumes: list[Mapping[str, Any]], owner: str) -> dict[str, Path]:
        """Each volume's local folder (a claim: under the shared root; emptyDir: the run's)."""
        out: dict[str, Path] = {}
        for v in volumes:
            if "persistentVolumeClaim" in v:
                claim = str(v["persistentVolumeClaim"]["claimName"])
                out[v["name"]] = self.opts.shared_root / claim
            else:
                out[v["name"]] = self.opts.run_dir / "emptydir" / owner / v["name"]
            out[v["name"]].mkdir(parents=True, exist_ok=True)
        return out

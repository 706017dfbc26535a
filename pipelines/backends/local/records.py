"""The records of a local run: nodes with their attempts, and the run's options."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.argo.vocab import DONE, NodePhase
from pipelines.backends.local.pod import Attempt

if TYPE_CHECKING:
    from pipelines.backends.local.image import ImageRuntime

LOCAL_OVERRIDES = ("MLFLOW_TRACKING_URI",)


@dataclass
class Node:
    """One node of the run, as Argo's status shows it (pod, DAG, steps, task group, skipped)."""

    name: str
    template: str
    kind: str
    phase: NodePhase = NodePhase.PENDING
    message: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    exit_code: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    prefix: str | None = None  # of the children's names (None: "<name>.")
    ticket: int | None = None  # its place in the workflow's pod queue (an item of a fan-out)

    @property
    def done(self) -> bool:
        return self.phase in DONE

    @property
    def preemptions(self) -> int:
        return sum(a.preempted or a.exit_code == 143 for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "type": self.kind,
            "phase": self.phase,
            "message": self.message,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "exit_code": self.exit_code,
            "attempts": [a.to_dict() for a in self.attempts],
            "started": self.started,
            "finished": self.finished,
        }


@dataclass
class Options:
    """How a local run runs (what :func:`pipelines.backends.local.run_workflow` was given).

    Attributes:
        run_dir: this run's folder (logs, outputs, scripts, ``run.json``).
        shared_root: local root under which each persistentVolumeClaim is a folder.
        cwd: working directory of the steps.
        base_env: the steps' environment before a template's own env.
        overrides: extra environment the caller gave (its ``MLFLOW_TRACKING_URI`` wins).
        secrets: the values of the manifest's ``secretKeyRef`` env vars.
        parameters: the workflow's parameters, overrides applied.
        chaos: probability that a running trial attempt is preempted (SIGTERM, SIGKILL after the
            grace period) at a random moment.
        seed: seeds the preemption injection.
        backoff_scale: retry backoff waits are multiplied by this (0.01: 15s becomes 0.15s).
        stop_grace: seconds between SIGTERM and SIGKILL when the run is interrupted.
        chaos_window: a preemption lands at a uniform moment in (0.1, 0.9) x this many seconds
            after the attempt starts; None: the mean duration of the trial attempts so far
            (20 s before the first one ends).
        image: run every step inside this image (:mod:`pipelines.backends.local.image`), as a
            pod would; None: each step is a process of this project's environment.
    """

    run_dir: Path
    shared_root: Path
    cwd: Path
    base_env: Mapping[str, str]
    overrides: Mapping[str, str]
    secrets: Mapping[str, str]
    parameters: Mapping[str, str]
    chaos: float = 0.0
    seed: int | None = None
    backoff_scale: float = 0.01
    stop_grace: float = 5.0
    chaos_window: float | None = None  # None: adapt to the trials' durations
    image: ImageRuntime | None = None  # RUNTIME=image: each step in the image; None: a process


def trial_templates(templates: Iterable[Mapping[str, Any]]) -> set[str]:
    """Templates that preemptions are injected into: the retried ones that run a trial.

    A trial template has a ``retryStrategy`` and a ``trial-id`` input (or ``--trial-id`` argument);
    in a workflow without any, every template with a ``retryStrategy`` counts. A ``resource``
    template with a ``trial-id`` input (a multi-node trial's JobSet) is one too: its gang restarts
    are the JobSet's, not a retry strategy's.
    """
    templates = list(templates)
    retried = [
        t for t in templates if t.get("retryStrategy") and ("container" in t or "script" in t)
    ]

    def is_trial(t: Mapping[str, Any]) -> bool:
        inputs = {p.get("name") for p in (t.get("inputs") or {}).get("parameters") or []}
        args = (t.get("container") or t.get("script") or {}).get("args") or []
        return "trial-id" in inputs or "--trial-id" in args

    trials = {t["name"] for t in retried if is_trial(t)}
    trials |= {t["name"] for t in templates if "resource" in t and is_trial(t)}
    return trials or {t["name"] for t in retried}


def continues_on(task: Mapping[str, Any], phase: str) -> bool:
    """``continueOn.failed`` / ``continueOn.error`` of a task or step for this phase."""
    c = task.get("continueOn") or {}
    if phase == NodePhase.FAILED:
        return bool(c.get("failed"))
    return bool(c.get("error")) if phase == NodePhase.ERROR else False


def safe_name(name: str) -> str:
    """A node name as a file name."""
    return re.sub(r"[^A-Za-z0-9_.()\-]", "_", name)


def text_of(v: Any) -> str:
    """A parameter value as Argo passes it: strings as they are, anything else as JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path`` (None when missing, unreadable or not an object)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

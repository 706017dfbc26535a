"""The local backend: run a compiled Argo Workflow on this machine, each step a subprocess.

``run_workflow`` takes the exact dict that would be sent to Argo, validated first by
:mod:`pipelines.validate` (the one place for ``argo lint``'s rules). The fields it honours (or that
are no-ops on one machine) are an allow-list in :mod:`pipelines.backends.local.spec`; anything else
is an error naming the field before anything runs. Tags and ``depends`` are read by
:mod:`pipelines.argo`, as the validator reads them. ``status`` is what ``make status`` calls without a
cluster; ``python -m pipelines run FILE.yaml`` and local ``make submit`` are in
:mod:`pipelines.backends.local.cli`.

Local layout: each persistentVolumeClaim is the folder ``<shared root>/<claimName>/``; every env var
whose value is a volume's mount path (``SWEEPYARD_SHARED=/mnt/shared``) points at that folder instead
(command lines are never rewritten); output parameters written to ``$SWEEPYARD_OUTPUTS`` (manifest:
``/tmp/outputs/<name>``) land in a folder of their own per step attempt; every attempt's log is
``<run dir>/logs/<node>-<attempt>.log``; ``<run dir>/run.json`` is the run's state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.backends.local.engine import Engine, Node, Options
from pipelines.backends.local.progress import Progress
from pipelines.backends.local.spec import (
    UnsupportedError,
    check_supported,
    check_valid,
    deadline_seconds,
    default_parameters,
    load_dotenv_values,
    resolve_secrets,
)
from pipelines.backends.local.status import last_run, status

if TYPE_CHECKING:
    from pipelines.backends.local.image import ImageRuntime

__all__ = [
    "RunResult",
    "UnsupportedError",
    "last_run",
    "run_workflow",
    "status",
]


@dataclass
class RunResult:
    """How a local run ended: Argo's workflow phase and every node with its attempts."""

    name: str
    status: str  # Succeeded | Failed | Error
    nodes: dict[str, Node]
    wall_seconds: float
    run_dir: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "Succeeded"

    def pods(self, template: str | None = None) -> list[Node]:
        """The step nodes (optionally of one template), in the order they were created."""
        return [
            n
            for n in self.nodes.values()
            if n.kind == "Pod" and (template is None or n.template == template)
        ]


def workflow_name(manifest: Mapping[str, Any]) -> str:
    """``metadata.name``, or ``generateName`` plus five random characters, as Argo names it."""
    meta = manifest.get("metadata") or {}
    if meta.get("name"):
        return str(meta["name"])
    alphabet = string.ascii_lowercase + string.digits
    return str(meta.get("generateName") or "workflow-") + "".join(
        secrets.choice(alphabet) for _ in range(5)
    )


def run_workflow(
    manifest: Mapping[str, Any],
    *,
    run_dir: Path,
    shared_root: Path,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    chaos: float = 0.0,
    seed: int | None = None,
    backoff_scale: float = 0.01,
    progress: bool = True,
    name: str | None = None,
    cwd: Path | None = None,
    dotenv: Path | None = None,
    stop_grace: float = 5.0,
    chaos_window: float | None = None,
    validated: bool = False,
    image: ImageRuntime | None = None,
) -> RunResult:
    """Run ``manifest`` here and return when it has finished (exit handler included).

    Args:
        manifest: the Workflow dict, exactly as it would be sent to Argo.
        run_dir: this run's folder (logs, outputs, scripts, ``run.json``); created.
        shared_root: local root under which each persistentVolumeClaim is a folder.
        env: extra environment of the steps; its ``MLFLOW_TRACKING_URI`` overrides the manifest's.
            Secret env vars (``secretKeyRef``) are looked up by their own name here, then in the
            process environment, then in ``.env``.
        parameters: workflow parameters (``spec.arguments``) to set.
        chaos: probability that a running trial attempt is preempted (SIGTERM, SIGKILL after the
            grace period) at a random moment.
        seed: seeds the preemption injection.
        backoff_scale: retry backoff waits are multiplied by this (0.01: 15s becomes 0.15s).
        progress: show the live table (or plain lines when stdout is not a TTY) and a summary.
        name: the workflow's name (default: generateName plus a random suffix).
        cwd: working directory of the steps (default: the current one).
        dotenv: the ``.env`` file for secrets (default: ``<cwd>/.env``).
        stop_grace: seconds between SIGTERM and SIGKILL when the run is interrupted.
        chaos_window: a preemption lands at a uniform moment in (0.1, 0.9) x this many seconds
            after the attempt starts; by default the mean duration of the trial attempts so far
            (20 s before the first one ends).
        validated: the caller has validated ``manifest`` already (else it is validated here).
        image: run every step inside this image (:mod:`pipelines.backends.local.image`), as a
            pod would; None: each step is a process of this project's environment.

    Raises:
        UnsupportedError: a manifest the validator rejects, a field the local backend does not
            honour, a missing required secret, or an unknown parameter; nothing has run.
    """
    if not validated:
        check_valid(manifest)
    check_supported(manifest)
    opts = _options(
        manifest,
        Options(
            run_dir=run_dir,
            shared_root=shared_root,
            cwd=cwd or Path.cwd(),
            base_env={},
            overrides=dict(env or {}),
            secrets={},
            parameters=dict(parameters or {}),
            chaos=chaos,
            seed=seed,
            backoff_scale=backoff_scale,
            stop_grace=stop_grace,
            chaos_window=chaos_window,
            image=image,
        ),
        dotenv,
    )
    name = name or workflow_name(manifest)
    params = opts.parameters
    engine = Engine(manifest, name, opts)
    sweep_id = params.get("sweep-id") or name
    view = Progress(engine, sweep_id) if progress else None
    state = _StateWriter(engine, manifest, run_dir, shared_root, sweep_id)
    if view is not None:
        view.start()
    state.start()
    try:
        interrupted = _supervise(engine, manifest.get("spec") or {})
    finally:
        engine.finished = engine.finished or time.time()
        state.stop()
        if view is not None:
            view.stop()
    if view is not None:
        view.summary(run_dir / "logs")
    return RunResult(
        name=name,
        status=engine.status,
        nodes={n.name: n for n in engine.nodes},
        wall_seconds=engine.finished - engine.started,
        run_dir=run_dir,
        volumes=dict(engine.claims),
        interrupted=interrupted,
        message=engine.stop_reason,
    )


def _options(manifest: Mapping[str, Any], given: Options, dotenv: Path | None) -> Options:
    """``given`` completed: the workflow's parameters with the overrides, the steps' environment,
    the secrets (looked up in the overrides, the environment, then ``.env``); folders created.

    Raises:
        UnsupportedError: an unknown parameter or a missing required secret.
    """
    parameters = default_parameters(manifest, given.parameters)
    env = dict(given.overrides)
    found = resolve_secrets(
        manifest, [env, os.environ, load_dotenv_values(dotenv or given.cwd / ".env")]
    )
    given.run_dir.mkdir(parents=True, exist_ok=True)
    given.shared_root.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        given,
        parameters=parameters,
        base_env={"SWEEPYARD_CPUS": str(cpu_share(manifest)), **os.environ, **env},
        secrets=found,
    )


def cpu_share(manifest: Mapping[str, Any]) -> int:
    """The CPUs each running step gets here: the machine's, shared by the workflow's parallelism
    (the local stand-in for a pod's CPU request; a trial's threads are capped by it)."""
    parallelism = (manifest.get("spec") or {}).get("parallelism") or 1
    return max(1, len(os.sched_getaffinity(0)) // max(1, int(parallelism)))


def _supervise(engine: Engine, spec: Mapping[str, Any]) -> bool:
    """Drive the run in a worker thread; stop it at the workflow's deadline or on Ctrl-C.

    Returns:
        whether the run was interrupted (Ctrl-C, or ``kill`` through the CLI's handler).
    """
    done = threading.Event()
    worker = threading.Thread(target=_drive, args=(engine, spec, done), daemon=True)
    deadline = deadline_seconds(spec, "spec")
    try:
        worker.start()
        while not done.wait(0.2):
            if deadline is not None and time.time() - engine.started > deadline:
                engine.stop("workflow exceeded its activeDeadlineSeconds")
                deadline = None
    except KeyboardInterrupt:
        engine.stop("interrupted (Ctrl-C)")
        while worker.is_alive():
            worker.join(0.5)
            engine.table.stop_all(1.0)  # a step that started in between
        engine.status = "Failed"
        return True
    return False


def _drive(engine: Engine, spec: Mapping[str, Any], done: threading.Event) -> None:
    """The entrypoint, then the exit handler with ``{{workflow.status}}`` set (not after Ctrl-C)."""
    try:
        main = engine.run_template(str(spec["entrypoint"]), engine.name, prefix="")
        engine.status = "Succeeded" if main.phase in ("Succeeded", "Skipped") else main.phase
        if engine.stop_reason and engine.status == "Succeeded":
            engine.status = "Failed"
        if spec.get("onExit") and not engine.stop_reason.startswith("interrupted"):
            engine.stopping.clear()  # a deadline stops the main DAG, not the exit handler
            handler = engine.run_template(
                str(spec["onExit"]), f"{engine.name}.onExit", prefix="onExit."
            )
            if handler.phase in ("Failed", "Error") and engine.status == "Succeeded":
                engine.status = handler.phase
        engine.finished = time.time()
    finally:
        done.set()


class _StateWriter:
    """Keeps ``<run dir>/run.json`` current (every 2 s and at the end) for ``make status``."""

    def __init__(
        self,
        engine: Engine,
        manifest: Mapping[str, Any],
        run_dir: Path,
        shared_root: Path,
        sweep_id: str,
    ):
        self.engine, self.run_dir = engine, run_dir
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        self.head = {
            "name": engine.name,
            "pipeline": labels.get("sweepyard.io/pipeline"),
            "sweep_id": sweep_id,
            "shared_root": str(shared_root),
            "volumes": {k: str(v) for k, v in engine.claims.items()},
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.write()

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            self.write()

    def write(self) -> None:
        e = self.engine
        doc = {
            **self.head,
            "status": e.status,
            "message": e.stop_reason,
            "started": e.started,
            "finished": e.finished,
            "nodes": [n.to_dict() for n in list(e.nodes)],
        }
        tmp = self.run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self.run_dir / "run.json")

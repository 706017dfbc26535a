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

from pipelines.argo.vocab import FAILED, NodePhase
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
from pipelines.backends.local.state import RunState
from pipelines.backends.local.status import last_run, status

if TYPE_CHECKING:
    from pipelines.backends.local.image import ImageRuntime

_OK = (NodePhase.SUCCEEDED, NodePhase.SKIPPED)  # an entrypoint that ended so: the run succeeded

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
    status: NodePhase  # Succeeded | Failed | Error
    nodes: dict[str, Node]
    wall_seconds: float
    run_dir: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == NodePhase.SUCCEEDED

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
        env: extra environment of the steps; its ``MLFLOW_TRACKING_URI`` overrides the manifest's.
            Secret env vars (``secretKeyRef``) are looked up by their own name here, then in the
            process environment, then in ``.env``.
        parameters: workflow parameters (``spec.arguments``) to set.
        progress: show the live table (or plain lines when stdout is not a TTY) and a summary.
        name: the workflow's name (default: generateName plus a random suffix).
        cwd: working directory of the steps (default: the current one).
        dotenv: the ``.env`` file for secrets (default: ``<cwd>/.env``).
        validated: the caller has validated ``manifest`` already (else it is validated here).
        run_dir, shared_root, chaos, seed, backoff_scale, stop_grace, chaos_window, image: as
            :class:`~pipelines.backends.local.records.Options` documents them (``run_dir`` and
            ``shared_root`` are created).

    Raises:
        UnsupportedError: a manifest the validator rejects, a field the local backend does not
            honour, a missing required secret, or an unknown parameter; nothing has run.
    """
    if not validated:
        check_valid(manifest)
    check_supported(manifest)
    given = Options(
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
    )
    engine = Engine(manifest, name or workflow_name(manifest), _options(manifest, given, dotenv))
    return _run(engine, manifest, progress)


def _run(engine: Engine, manifest: Mapping[str, Any], progress: bool) -> RunResult:
    """Drive ``engine`` to its end with the live view and ``run.json`` kept current."""
    run = engine.state
    sweep_id = run.opts.parameters.get("sweep-id") or run.name
    view = Progress(run, sweep_id) if progress else None
    state = _StateWriter(run, manifest, sweep_id)
    if view is not None:
        view.start()
    state.start()
    try:
        interrupted = _supervise(engine, manifest.get("spec") or {})
    finally:
        run.finished = run.finished or time.time()
        state.stop()
        if view is not None:
            view.stop()
    if view is not None:
        view.summary(run.opts.run_dir / "logs")
    return RunResult(
        name=run.name,
        status=run.status,
        nodes={n.name: n for n in run.nodes},
        wall_seconds=run.finished - run.started,
        run_dir=run.opts.run_dir,
        volumes=dict(run.claims),
        interrupted=interrupted,
        message=run.stop_reason,
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
    run = engine.state
    done = threading.Event()
    worker = threading.Thread(target=_drive, args=(engine, spec, done), daemon=True)
    deadline = deadline_seconds(spec, "spec")
    try:
        worker.start()
        while not done.wait(0.2):
            if deadline is not None and time.time() - run.started > deadline:
                run.stop("workflow exceeded its activeDeadlineSeconds")
                deadline = None
    except KeyboardInterrupt:
        run.stop("interrupted (Ctrl-C)")
        while worker.is_alive():
            worker.join(0.5)
            run.table.stop_all(1.0)  # a step that started in between
        run.status = NodePhase.FAILED
        return True
    return False


def _drive(engine: Engine, spec: Mapping[str, Any], done: threading.Event) -> None:
    """The entrypoint, then the exit handler with ``{{workflow.status}}`` set (not after Ctrl-C)."""
    run = engine.state
    try:
        main = engine.run_template(str(spec["entrypoint"]), run.name, prefix="")
        run.status = NodePhase.SUCCEEDED if main.phase in _OK else main.phase
        if run.stop_reason and run.status == NodePhase.SUCCEEDED:
            run.status = NodePhase.FAILED
        if spec.get("onExit") and not run.stop_reason.startswith("interrupted"):
            run.stopping.clear()  # a deadline stops the main DAG, not the exit handler
            handler = engine.run_template(str(spec["onExit"]), f"{run.name}.onExit", "onExit.")
            if handler.phase in FAILED and run.status == NodePhase.SUCCEEDED:
                run.status = handler.phase
        run.finished = time.time()
    finally:
        done.set()


class _StateWriter:
    """Keeps ``<run dir>/run.json`` current (every 2 s and at the end) for ``make status``."""

    def __init__(self, run: RunState, manifest: Mapping[str, Any], sweep_id: str):
        self.run, self.run_dir = run, run.opts.run_dir
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        self.head = {
            "name": run.name,
            "pipeline": labels.get("sweepyard.io/pipeline"),
            "sweep_id": sweep_id,
            "shared_root": str(run.opts.shared_root),
            "volumes": {k: str(v) for k, v in run.claims.items()},
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
        e = self.run
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

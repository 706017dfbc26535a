"""The local backend: run a compiled Argo Workflow on this machine, each step a subprocess.

``run_workflow`` takes the exact dict that would be sent to Argo. The fields it honours (or that are
no-ops on one machine) are an allow-list in :mod:`pipelines.backends.local_spec`; anything else is
an error naming the field before anything runs. ``main`` is ``python -m pipelines run FILE.yaml``;
``submit`` and ``status`` are what ``make submit`` / ``make status`` call without a cluster.

Local layout: each persistentVolumeClaim is the folder ``<shared root>/<claimName>/``; every env var
whose value is a volume's mount path (``SWEEPYARD_SHARED=/mnt/shared``) points at that folder instead
(command lines are never rewritten); output parameters written to ``$SWEEPYARD_OUTPUTS`` (manifest:
``/tmp/outputs/<name>``) land in a folder of their own per step attempt; every attempt's log is
``<run dir>/logs/<node>-<attempt>.log``; ``<run dir>/run.json`` is the run's state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import string
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.backends.local_engine import Engine, Node, Options
from pipelines.backends.local_expr import ExprError
from pipelines.backends.local_progress import Progress
from pipelines.backends.local_spec import (
    UnsupportedError,
    check_supported,
    deadline_seconds,
    default_parameters,
    load_dotenv_values,
    resolve_secrets,
)
from pipelines.backends.local_status import last_run, status

__all__ = [
    "RunResult",
    "UnsupportedError",
    "last_run",
    "main",
    "run_workflow",
    "status",
    "submit",
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

    Raises:
        UnsupportedError: a field the local backend does not honour, a missing required secret, or
            an unknown parameter; nothing has run.
    """
    check_supported(manifest)
    cwd = cwd or Path.cwd()
    params = default_parameters(manifest, parameters or {})
    env = dict(env or {})
    found = resolve_secrets(manifest, [env, os.environ, load_dotenv_values(dotenv or cwd / ".env")])
    name = name or workflow_name(manifest)
    run_dir.mkdir(parents=True, exist_ok=True)
    shared_root.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, **{k: v for k, v in env.items()}}
    opts = Options(
        run_dir=run_dir,
        shared_root=shared_root,
        cwd=cwd,
        base_env=base_env,
        overrides=env,
        secrets=found,
        parameters=params,
        chaos=chaos,
        seed=seed,
        backoff_scale=backoff_scale,
        stop_grace=stop_grace,
        chaos_window=chaos_window,
    )
    engine = Engine(manifest, name, opts)
    spec = manifest.get("spec") or {}
    sweep_id = params.get("sweep-id") or name
    view = Progress(engine, sweep_id) if progress else None
    state = _StateWriter(engine, manifest, run_dir, shared_root, sweep_id)
    interrupted = False
    done = threading.Event()
    worker = threading.Thread(target=_drive, args=(engine, spec, done), daemon=True)
    deadline = deadline_seconds(spec, "spec")
    if view is not None:
        view.start()
    state.start()
    try:
        worker.start()
        while not done.wait(0.2):
            if deadline is not None and time.time() - engine.started > deadline:
                engine.stop("workflow exceeded its activeDeadlineSeconds")
                deadline = None
    except KeyboardInterrupt:
        interrupted = True
        engine.stop("interrupted (Ctrl-C)")
        while worker.is_alive():
            worker.join(0.5)
            engine.table.stop_all(1.0)  # a step that started in between
        engine.status = "Failed"
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


# --- entry points ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill <runner>`` stops the run like Ctrl-C (children stopped, run marked failed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _uses_mlflow(manifest: Mapping[str, Any]) -> bool:
    return "MLFLOW_TRACKING_URI" in json.dumps(manifest)


@contextlib.contextmanager
def _mlflow_env(manifest: Mapping[str, Any], store: Path) -> Iterator[dict[str, str]]:
    """``MLFLOW_TRACKING_URI`` for the steps: the environment's, or a loopback server's for the run."""
    if os.environ.get("MLFLOW_TRACKING_URI") or not _uses_mlflow(manifest):
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        yield {"MLFLOW_TRACKING_URI": uri} if uri else {}
        return
    from pipelines.backends.mlflow_server import start_mlflow_server

    print(f"starting a local MLflow server (store: {store})", flush=True)
    server = start_mlflow_server(store)
    print(f"MLflow: {server.url}", flush=True)
    try:
        yield {"MLFLOW_TRACKING_URI": server.url}
    finally:
        server.stop()
        print(f"MLflow runs stored in {store} (browse them with `make ui`)", flush=True)


def _exit_code(result: RunResult) -> int:
    if result.interrupted:
        return 130
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines run FILE.yaml [--chaos P] [--param k=v] [--shared DIR]``."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines run", description="Run a compiled Argo Workflow on this machine."
    )
    p.add_argument("file", type=Path)
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--chaos", type=float, default=0.0, help="preemption probability per trial attempt"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the preemption injection")
    p.add_argument("--shared", type=Path, default=None, help="local shared root")
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--backoff-scale", type=float, default=0.01)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(list(argv) if argv is not None else None)
    if not 0.0 <= args.chaos <= 1.0:
        p.error(f"--chaos {args.chaos}: a probability between 0 and 1")
    params: dict[str, str] = {}
    for kv in args.param:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            p.error(f"--param {kv!r}: expected NAME=VALUE")
        params[key] = value
    try:
        manifest = yaml.safe_load(args.file.read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"error: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    if not isinstance(manifest, dict):
        print(f"error: {args.file} is not a Workflow manifest", file=sys.stderr)
        return 2
    home = Path.cwd() / ".sweepyard"
    shared = args.shared or Path(os.environ.get("SWEEPYARD_SHARED") or home / "shared")
    name = workflow_name(manifest)
    try:
        with _sigterm_as_interrupt(), _mlflow_env(manifest, home / "mlflow") as env:
            result = run_workflow(
                manifest,
                run_dir=args.run_dir or home / "runs" / name,
                shared_root=shared,
                env=env,
                parameters=params,
                chaos=args.chaos,
                seed=args.seed,
                backoff_scale=args.backoff_scale,
                progress=not args.no_progress,
                name=name,
            )
    except (UnsupportedError, ExprError) as e:
        print(f"error: {args.file}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return _exit_code(result)


def submit(
    manifest: Mapping[str, Any],
    *,
    sweep_id: str | None,
    chaos: float,
    project_root: Path,
    seed: int | None = None,
    progress: bool = True,
) -> int:
    """``make submit`` without a cluster: run the validated sweep here; the exit status of the run.

    Shared root: ``$SWEEPYARD_SHARED`` or ``<project>/.sweepyard/shared``; run folder
    ``<project>/.sweepyard/runs/<workflow name>/``; MLflow: ``$MLFLOW_TRACKING_URI`` or a loopback
    server over ``<project>/.sweepyard/mlflow`` (runs accumulate there for ``make ui``). A
    ``sweep_id`` resumes that sweep (finished trials are skipped by the trainer).
    """
    home = project_root / ".sweepyard"
    shared = Path(os.environ.get("SWEEPYARD_SHARED") or home / "shared")
    name = workflow_name(manifest)
    try:
        with _sigterm_as_interrupt(), _mlflow_env(manifest, home / "mlflow") as env:
            result = run_workflow(
                manifest,
                run_dir=home / "runs" / name,
                shared_root=shared,
                env=env,
                parameters={"sweep-id": sweep_id} if sweep_id else {},
                chaos=chaos,
                seed=seed,
                progress=progress,
                name=name,
                cwd=project_root,
            )
    except (UnsupportedError, ExprError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    _print_leaderboard(result, sweep_id or name)
    return _exit_code(result)


def _print_leaderboard(result: RunResult, sweep_id: str) -> None:
    """End a local sweep the way a user reads it: the leaderboard and where the plots are."""
    from components.leaderboard import final_report  # pure file reading: no torch, no MLflow

    for claim in sorted(result.volumes):
        report = final_report(result.volumes[claim], sweep_id)
        if report:
            print(report)
            return

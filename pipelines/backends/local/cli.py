"""Entry points of the local backend: ``python -m pipelines run FILE`` and local ``make submit``.

The engine is :mod:`pipelines.backends.local`; this module adds what a person at a terminal needs
around it: a loopback MLflow server when none is configured, Ctrl-C and ``kill`` handling, the
exit status, and the leaderboard at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.contract import shared_root
from pipelines.argo.expr import ExprError
from pipelines.backends.local import RunResult, run_workflow, workflow_name
from pipelines.backends.local.image import RUNTIMES, ImageError, ImageRuntime, image_runtime
from pipelines.backends.local.pod import map_mounts
from pipelines.backends.local.spec import UnsupportedError, check_valid


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
    from pipelines.backends.mlflow_server import LazyMlflowServer, MlflowServer

    def started(real: MlflowServer) -> None:
        print(f"started the local MLflow server (store: {store}; pid {real.process.pid})")

    server = LazyMlflowServer(store, on_start=started)
    print(f"MLflow (while this run runs): {server.url}, started when a step first uses it")
    try:
        yield {"MLFLOW_TRACKING_URI": server.url}
    finally:
        server.stop()
        if server.error is not None:
            print(f"error: the local MLflow server did not start: {server.error}", file=sys.stderr)
        elif server.started:
            print(f"MLflow server stopped; its runs are stored in {store} (`make ui` serves them)")
        else:
            print("MLflow: no step of this run used it, so no server was started")


@contextlib.contextmanager
def _runtime(runtime: str) -> Iterator[ImageRuntime | None]:
    """The image mounted for the run (``runtime == "image"``), else None (steps are processes)."""
    if runtime not in RUNTIMES:
        raise ImageError(f"runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "process":
        yield None
        return
    with image_runtime() as image:
        print(f"every step runs inside {image.ref} (uid {image.uid}, read-only root)", flush=True)
        yield image


def _exit_code(result: RunResult) -> int:
    if result.interrupted:
        return 130
    return 0 if result.ok else 1


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--runtime", choices=RUNTIMES, default="process", help="image: inside make image's"
    )
    return p


def _parameters(p: argparse.ArgumentParser, pairs: Sequence[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` pairs as a dict (a malformed one: a usage error)."""
    params: dict[str, str] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            p.error(f"--param {kv!r}: expected NAME=VALUE")
        params[key] = value
    return params


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The Workflow manifest in ``path`` (None, with the error printed: unreadable, not a map)."""
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"error: cannot read {path}: {e}", file=sys.stderr)
        return None
    if not isinstance(manifest, dict):
        print(f"error: {path} is not a Workflow manifest", file=sys.stderr)
        return None
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines run FILE.yaml [--chaos P] [--param k=v] [--shared DIR]``."""
    p = _parser()
    args = p.parse_args(list(argv) if argv is not None else None)
    if not 0.0 <= args.chaos <= 1.0:
        p.error(f"--chaos {args.chaos}: a probability between 0 and 1")
    params = _parameters(p, args.param)
    manifest = _read_manifest(args.file)
    if manifest is None:
        return 2
    home = Path.cwd() / ".sweepyard"
    shared = args.shared or shared_root(default=home / "shared")
    name = workflow_name(manifest)
    try:
        check_valid(manifest)  # before anything starts, MLflow included
        with (
            _runtime(args.runtime) as image,
            _sigterm_as_interrupt(),
            _mlflow_env(manifest, home / "mlflow") as env,
        ):
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
                validated=True,
                image=image,
            )
    except (UnsupportedError, ExprError, ImageError) as e:
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
    chaos_window: float | None = None,
    progress: bool = True,
    runtime: str = "process",
) -> int:
    """``make submit`` without a cluster: run the validated sweep here; the exit status of the run.

    Shared root: ``$SWEEPYARD_SHARED`` or ``<project>/.sweepyard/shared``; run folder
    ``<project>/.sweepyard/runs/<workflow name>/``; MLflow: ``$MLFLOW_TRACKING_URI`` or a loopback
    server over ``<project>/.sweepyard/mlflow`` (runs accumulate there for ``make ui``). A
    ``sweep_id`` resumes that sweep (finished trials are skipped by the trainer). ``runtime``
    ``image``: every step inside the built image (:mod:`pipelines.backends.local.image`).
    """
    home = project_root / ".sweepyard"
    shared = shared_root(default=home / "shared")
    name = workflow_name(manifest)
    try:
        with (
            _runtime(runtime) as image,
            _sigterm_as_interrupt(),
            _mlflow_env(manifest, home / "mlflow") as env,
        ):
            result = run_workflow(
                manifest,
                run_dir=home / "runs" / name,
                shared_root=shared,
                env=env,
                parameters={"sweep-id": sweep_id} if sweep_id else {},
                chaos=chaos,
                seed=seed,
                chaos_window=chaos_window,
                progress=progress,
                name=name,
                cwd=project_root,
                validated=True,  # make submit validates what it compiled
                image=image,
            )
    except (UnsupportedError, ExprError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    _print_leaderboard(result, sweep_id or name, _pod_mounts(manifest, result))
    pipeline = str(
        ((manifest.get("metadata") or {}).get("labels") or {}).get("sweepyard.io/pipeline") or ""
    )
    _print_how_to_open(pipeline, sweep_id or name, result)
    return _exit_code(result)


def _print_how_to_open(pipeline: str, sweep_id: str, result: RunResult) -> None:
    """The last lines of a local run: how to open its results (the run's own MLflow has stopped)."""
    target = f"make ui PIPELINE={pipeline}" if pipeline else "make ui"
    print(f"Open the results of sweep {sweep_id}: `{target}` serves MLflow (the sweep's runs) and")
    print("TensorBoard (one run per trial) on loopback and prints their URLs; `make status` lists")
    print(f"the trials and the run's artifacts ({result.run_dir}).", flush=True)


def _pod_mounts(manifest: Mapping[str, Any], result: RunResult) -> dict[str, Path]:
    """Each workflow volume's mountPath -> its local folder (paths that steps in the image wrote)."""
    mounts: dict[str, Path] = {}
    for t in (manifest.get("spec") or {}).get("templates") or []:
        for vm in (t.get("container") or t.get("script") or {}).get("volumeMounts") or []:
            if vm.get("name") in result.volumes:
                mounts[str(vm["mountPath"])] = result.volumes[vm["name"]] / (
                    vm.get("subPath") or ""
                )
    return mounts


def _print_leaderboard(result: RunResult, sweep_id: str, mounts: Mapping[str, Path]) -> None:
    """End a local sweep the way a user reads it: the leaderboard and where the plots are (paths
    a step wrote inside the image shown as the local folders they are)."""
    from components.summary import final_report  # pure file reading: no torch, no MLflow

    for claim in sorted(result.volumes):
        report = final_report(result.volumes[claim], sweep_id)
        if report:
            lines = report.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("plots: "):
                    # a path that exists here is a local one already (the process runtime):
                    # only a path inside the image (/mnt/shared/..., /tmp/...) is mapped
                    paths = [
                        p if Path(p).exists() else map_mounts(p, mounts)
                        for p in line[len("plots: ") :].split()
                    ]
                    lines[i] = "plots: " + "  ".join(paths)
            print("\n".join(lines))
            return

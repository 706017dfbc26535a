"""``make ui``: the local MLflow UI and a TensorBoard over the folder the trials write, on loopback.

The local backend keeps its MLflow store in ``.sweepyard/mlflow`` and the shared disk in
``.sweepyard/shared`` (or ``$SWEEPYARD_SHARED``), where each claim is a folder: the trials write
``<shared>/<claim>/<tensorboard_root>/<sweep>/<trial run>``. This serves both the way the team's
cluster does (MLflow server + TensorBoard over the claim's ``<tensorboard_root>``), prints their
addresses, and for the newest sweeps the URLs of their MLflow runs and TensorBoard runs, the
leaderboard and the plots; then runs until Ctrl-C. Subprocesses only: no torch here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.contract import (
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    leaderboard_files,
    shared_root,
    sweep_dir,
    sweeps_dir,
)
from components.links import sweep_runs_url, tensorboard_sweep_url
from pipelines.backends.mlflow_server import (
    MlflowServer,
    free_port,
    start_mlflow_server,
    stop_process_group,
    wait_until_up,
)

HOST = "127.0.0.1"
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_TENSORBOARD_PORT = 6006


@dataclass
class TensorBoard:
    url: str
    logdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_process_group(self.process, timeout=10)


@dataclass
class Ui:
    mlflow: MlflowServer
    tensorboard: TensorBoard
    experiment_url: str | None

    def sweep_urls(
        self, sweep_id: str, objective: str | None = None, direction: str = ""
    ) -> tuple[str | None, str]:
        """(the sweep's MLflow runs, ranked by ``objective``; its TensorBoard scalars)."""
        runs = None
        if self.experiment_url:
            base, _, exp_id = self.experiment_url.partition("/#/experiments/")
            runs = sweep_runs_url(base, exp_id, sweep_id, objective, direction)
        return runs, tensorboard_sweep_url(self.tensorboard.url, sweep_id)


def port_or_free(port: int) -> int:
    """``port`` when nothing listens on it, else a free one (a second ``make ui`` still works)."""
    if port == 0:
        return free_port()
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return free_port()
    return port


def start_tensorboard(
    logdir: Path, *, port: int, log_dir: Path, timeout: float = 90.0
) -> TensorBoard:
    """``tensorboard --logdir DIR --host 127.0.0.1 --port P``; waits until it answers.

    Raises:
        RuntimeError: TensorBoard exited or did not answer in time (its log's tail is included).
    """
    logdir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"tensorboard-{port}.log"
    binary = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or "tensorboard"
    cmd = [
        binary,
        "--logdir",
        str(logdir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--reload_interval",
        "5",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tb = TensorBoard(f"http://{HOST}:{port}", logdir, proc, log_path)
    wait_until_up("tensorboard", proc, tb.url, "/data/logdir", log_path, timeout, tb.stop)
    return tb


def experiment_url(mlflow_url: str, experiment: str) -> str | None:
    """The MLflow UI page of ``experiment`` (None when it has no runs yet)."""
    query = urllib.parse.urlencode({"experiment_name": experiment})
    for attempt in range(3):
        try:
            with urllib.request.urlopen(
                f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30
            ) as r:
                exp_id = json.load(r)["experiment"]["experiment_id"]
            return f"{mlflow_url}/#/experiments/{exp_id}"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # no such experiment yet
                return None
        except (urllib.error.URLError, KeyError, ValueError, TimeoutError, ConnectionError):
            pass
        time.sleep(1 + attempt)
    return None


@contextlib.contextmanager
def serve(
    *,
    mlflow_store: Path,
    shared: Path,
    tensorboard_root: str = TENSORBOARD_DIR,
    experiment: str = "sweep",
    mlflow_port: int = DEFAULT_MLFLOW_PORT,
    tensorboard_port: int = DEFAULT_TENSORBOARD_PORT,
) -> Iterator[Ui]:
    """Both servers up on loopback for the ``with`` block; both stopped after it."""
    mlflow = start_mlflow_server(mlflow_store, port=port_or_free(mlflow_port))
    try:
        tb = start_tensorboard(
            shared / tensorboard_root,
            port=port_or_free(tensorboard_port),
            log_dir=mlflow_store.parent / "logs",
        )
        try:
            yield Ui(mlflow, tb, experiment_url(mlflow.url, experiment))
        finally:
            tb.stop()
    finally:
        mlflow.stop()


def recent_sweeps(shared: Path, n: int = 3) -> list[tuple[str, dict[str, object]]]:
    """The newest sweeps that compare summarised: (sweep id, summary)."""
    found = []
    for path in sweeps_dir(shared).glob(f"*/{SUMMARY_FILE}"):
        try:
            found.append((path.stat().st_mtime, path.parent.name, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    found.sort(key=lambda t: t[0], reverse=True)
    return [(sweep, summary) for _, sweep, summary in found[:n]]


def _pipeline_places(pipeline: str) -> tuple[str, str, str]:
    """(claim, tensorboard root, experiment) of the pipeline's config; defaults when it has none."""
    try:
        from pipelines.config import load_config

        cfg = load_config(pipeline)
    except Exception:  # any config problem: `make ui` should still show what is there
        return "sweepyard-shared", TENSORBOARD_DIR, pipeline
    return cfg.cluster.claim, cfg.tracking.tensorboard_root, cfg.experiment


def claim_root(shared: Path, claim: str) -> Path:
    """The local folder of the pipeline's claim (the local backend's ``<shared>/<claim>``).

    ``shared`` itself when it has no such folder but holds sweeps (a shared root given as the
    claim's own folder, as ``$SWEEPYARD_SHARED`` inside a step).
    """
    if (shared / claim).is_dir() or not sweeps_dir(shared).is_dir():
        return shared / claim
    return shared


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines ui", description=__doc__.split("\n")[0])
    p.add_argument(
        "--pipeline", default="sweep", help="its config names the experiment and TB root"
    )
    p.add_argument("--project-root", type=Path, default=Path.cwd())
    p.add_argument("--mlflow-store", type=Path, help="default: <project>/.sweepyard/mlflow")
    p.add_argument(
        "--shared", type=Path, help="default: $SWEEPYARD_SHARED or <project>/.sweepyard/shared"
    )
    p.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT)
    p.add_argument("--tensorboard-port", type=int, default=DEFAULT_TENSORBOARD_PORT)
    p.add_argument("--check", action="store_true", help="start both, print the addresses, stop")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C (or SIGTERM); ``--check`` returns once both answer."""
    args = _parse_args(argv)
    home = args.project_root / ".sweepyard"
    store = args.mlflow_store or home / "mlflow"
    shared = args.shared or shared_root(default=home / "shared")
    claim, tb_root, experiment = _pipeline_places(args.pipeline)
    shared = claim_root(shared, claim)
    try:
        with serve(
            mlflow_store=store,
            shared=shared,
            tensorboard_root=tb_root,
            experiment=experiment,
            mlflow_port=args.mlflow_port,
            tensorboard_port=args.tensorboard_port,
        ) as ui:
            print(f"MLflow UI:   {ui.experiment_url or ui.mlflow.url}   (store: {store})")
            print(f"TensorBoard: {ui.tensorboard.url}   (logdir: {ui.tensorboard.logdir})")
            for sweep, summary in recent_sweeps(shared):
                _print_sweep(ui, shared, sweep, summary)
            sys.stdout.flush()
            if args.check:
                return 0
            print("Ctrl-C to stop.", flush=True)
            _wait(ui)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _print_sweep(ui: Ui, shared: Path, sweep: str, summary: dict[str, object]) -> None:
    objective = summary.get("objective")
    metric, direction = (
        (objective.get("metric"), str(objective.get("direction", "")))
        if isinstance(objective, dict)
        else (None, "")
    )
    runs, tensorboard = ui.sweep_urls(sweep, metric, direction)
    plots = summary.get("plots") or {}
    shown = " ".join(str(v) for v in plots.values()) if isinstance(plots, dict) else ""
    print(f"sweep {sweep}: {summary.get('status', '?')}; leaderboard "
          f"{leaderboard_files(sweep_dir(shared, sweep))[0]}; plots {shown}")  # fmt: skip
    if runs:
        print(f"  MLflow runs:      {runs}")
    print(f"  TensorBoard runs: {tensorboard}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait(ui: Ui) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    while ui.mlflow.process.poll() is None and ui.tensorboard.process.poll() is None:
        time.sleep(1)
    print("a server stopped; shutting down", file=sys.stderr)

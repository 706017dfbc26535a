"""``make rerun RUN=<mlflow run id>``: one trial again, from what its MLflow run recorded.

``python -m pipelines rerun --run ID | --trial T --sweep-id S [--allow-drift] [--from-checkpoint]
[--pipeline P] [--backend local|argo|kfp]`` reads the origin run's lineage
(:mod:`components.runtime.lineage`), compares it with what is here now (:mod:`pipelines.drift`) and
refuses, exit 2 and one line per difference, unless ``--allow-drift`` (the differences then become
``sweepyard.drift.<what>`` tags of the new run). Otherwise it runs the trial again as a sweep of
one trial: ``rerun-<trial id>-<6 hex>``, its space the recorded params (a grid of one value each:
the plan has exactly that trial), its data the recorded version, its run tagged
``sweepyard.origin_run_id``, in the origin's experiment; the registry is left alone (no
registration) and early stopping is off (a study of one trial). ``--from-checkpoint`` adds a first
step, ``continue-from``, that carries the origin trial's ``checkpoints/`` and ``work/`` over on the
shared disk, so the trial continues where the origin's last checkpoint left it. Then every metric's
history is compared with the origin's, step by step and bit for bit.

Where it runs is ``make submit``'s choice (``BACKEND``, else ``ARGO_SERVER`` / ``KFP_HOST``, else
here). On a cluster the shared disk is not here: the recorded data version is pinned only when
fetching would read something else (the pinning step fails, naming the folder, when it is gone),
and the command waits on the MLflow server (``MLFLOW_TRACKING_URI``, required there) for the
trial's run to end, then compares. KFP reruns neither a pinned version nor a checkpoint (no such
step in its package): it refuses those.

The pipeline is the one the run recorded (``sweepyard.pipeline``), or ``--pipeline`` (a name or a
YAML file). Without ``MLFLOW_TRACKING_URI`` the local store (``.sweepyard/mlflow``, where local
sweeps log) is served for the rerun. Exit status: 0 the rerun ran (identical or not: the output
says), 1 it failed, 2 refused or nothing to rerun, 124 a cluster's rerun still running after
``--wait-timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components import provenance as pv
from components.contract import CHECKPOINTS_DIR, RESULT_FILE, WORK_DIR, shared_root, trial_dir
from pipelines import drift
from pipelines.backends import BACKENDS, pick_backend
from pipelines.config import SweepConfig, load_config
from pipelines.rerun.cluster import submit_to_cluster, wait_for_run
from pipelines.rerun.histories import compare_histories, compare_metric
from pipelines.rerun.manifest import RerunPlan, pinned_data, rerun_config, rerun_manifest
from pipelines.rerun.origin import Origin, RerunError, find_origin

__all__ = [
    "Origin",
    "RerunError",
    "RerunPlan",
    "add_parser",
    "compare_histories",
    "compare_metric",
    "rerun_config",
    "rerun_manifest",
    "wait_for_run",
]

EXIT_REFUSED = 2


# (argparse names no public type for what add_subparsers returns: typeshed's is this one)
def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], root: Path) -> None:
    """The ``rerun`` subcommand of ``python -m pipelines``."""
    r = sub.add_parser("rerun", help="run one trial again from its MLflow run, or say what drifted")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="ID", help="the origin trial's MLflow run id")
    which.add_argument("--trial", metavar="T", help="the origin trial's id (with --sweep-id)")
    r.add_argument("--sweep-id", metavar="S", help="the origin trial's sweep (with --trial)")
    r.add_argument("--allow-drift", action="store_true", help="run it anyway; tag what drifted")
    r.add_argument(
        "--from-checkpoint",
        action="store_true",
        help="continue from the origin trial's last checkpoint instead of starting over",
    )
    r.add_argument("--pipeline", default=None, help="default: the pipeline the run recorded")
    r.add_argument(
        "--backend", choices=BACKENDS, default=None, help="where it runs (default: as make submit)"
    )
    r.add_argument(
        "--wait-timeout",
        type=float,
        default=6 * 3600.0,
        metavar="S",
        help="on a cluster: seconds to wait for the rerun trial to end before comparing",
    )
    r.add_argument("--root", default=str(root), help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_rerun)


def cmd_rerun(args: argparse.Namespace) -> int:
    try:
        return rerun(args, Path(args.root))
    except RerunError as exc:
        print(f"rerun: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def rerun(args: argparse.Namespace, root: Path) -> int:
    """See the module's docstring; ``root``: the project (``.sweepyard/`` lives there)."""
    if args.trial and not args.sweep_id:
        raise RerunError("--trial needs --sweep-id (TRIAL=... SWEEP_ID=...)")
    backend = pick_backend(args.backend, os.environ)
    with _tracking(root, backend) as uri:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        origin = find_origin(client, args.run, args.trial, args.sweep_id)
        cfg = load_config(args.pipeline or origin.pipeline, image=os.environ.get("IMAGE") or None)
        shared = None  # on a cluster, its shared disk is not here
        if backend == "local":
            shared = local_shared(root) / cfg.cluster.claim  # the local backend's claim folder
        drifts, data = drift.check(origin.tags, cfg, shared)
        if drifts and not args.allow_drift:
            refuse(origin, drifts)
            return EXIT_REFUSED
        for d in drifts:
            print(f"drift allowed: {d}")
        sweep_id = f"rerun-{origin.trial_id}-{uuid.uuid4().hex[:6]}"
        plan = RerunPlan(
            origin=origin,
            sweep_id=sweep_id,
            pin=pinned_data(cfg, data, drifts),
            continue_from=origin.sweep_id if args.from_checkpoint else None,
        )
        if args.from_checkpoint:
            print(f"continuing from the origin's {CHECKPOINTS_DIR}/ and {WORK_DIR}/")
        code, new_run = launch(backend, cfg, plan, client, root, args.wait_timeout)
        if new_run is None:
            print(f"rerun {sweep_id}: the trial left no MLflow run (exit {code})", file=sys.stderr)
            return code or 1
        tags = {pv.TAG_ORIGIN: origin.run_id}
        tags.update({pv.DRIFT_TAG_PREFIX + d.what: d.detail[: pv.MAX_TAG_LENGTH] for d in drifts})
        for key, value in tags.items():
            client.set_tag(new_run, key, value)
        since = checkpoint_step(client, new_run) if args.from_checkpoint else None
        report(client, origin, new_run, since)
        return code


def local_shared(root: Path) -> Path:
    """The local backend's shared disk: ``SWEEPYARD_SHARED``, else the project's ``.sweepyard``."""
    return shared_root(default=root / ".sweepyard" / "shared")


def refuse(origin: Origin, drifts: list[drift.Drift]) -> None:
    print(f"rerun of {origin.run_id} refused: what it recorded has drifted:", file=sys.stderr)
    for d in drifts:
        print(str(d), file=sys.stderr)
    print("(--allow-drift, or ALLOW_DRIFT=1, runs it anyway)", file=sys.stderr)


def launch(
    backend: str, cfg: SweepConfig, plan: RerunPlan, client: Any, root: Path, wait_s: float
) -> tuple[int, str | None]:
    """Run the rerun's sweep on ``backend``; its exit code and the new trial's MLflow run."""
    origin = plan.origin
    print(
        f"rerun of {origin.run_id} (trial {origin.trial_id} of {origin.sweep_id}): {plan.sweep_id}"
    )
    rcfg = rerun_config(cfg, origin, plan.pin)
    if backend == "local":
        from pipelines.backends.local import cli as local_cli

        code = local_cli.submit(
            rerun_manifest(rcfg, plan),
            sweep_id=plan.sweep_id,
            chaos=0.0,
            project_root=root,
            progress=sys.stdout.isatty(),
        )
        shared = local_shared(root) / cfg.cluster.claim
        return code, new_run_id(shared, plan.sweep_id, origin.trial_id)
    code = submit_to_cluster(backend, rcfg, plan, root)
    if code != 0:
        return code, None
    return wait_for_run(client, origin.experiment, plan.sweep_id, origin.trial_id, wait_s)


def checkpoint_step(client: Any, new_run: str) -> int | None:
    """The step a ``--from-checkpoint`` rerun continued from: its run's
    ``sweepyard.continued_from_step`` (the trial's lineage recorded what ``continue-from`` carried
    over; the points up to it are replayed from the checkpoint, not computed again)."""
    value = client.get_run(new_run).data.tags.get(pv.TAG_CONTINUED_STEP)
    if value is None or not value.isdigit():
        print("compared: every step (the rerun's run records no checkpoint it continued from)")
        return None
    print(f"compared: the steps after {value}, the checkpoint's (the points up to it are replayed)")
    return int(value)


def report(client: Any, origin: Origin, new_run: str, since: int | None) -> None:
    """Every metric of the new run against the origin's, then the verdict."""
    lines, compared, identical = compare_histories(client, origin.run_id, new_run, since)
    print("\n".join(lines))
    verdict = "bitwise identical to" if identical else "differs from"
    if not compared:
        verdict = "nothing computed to compare with"
    print(f"rerun {new_run}: {verdict} {origin.run_id}", flush=True)


@contextlib.contextmanager
def _tracking(root: Path, backend: str) -> Iterator[str]:
    """``MLFLOW_TRACKING_URI``, else (local backend) a loopback server over the local store for the
    rerun (its steps log there too: the variable is set while it runs)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        yield uri
        return
    if backend != "local":
        raise RerunError(
            f"BACKEND={backend}: set MLFLOW_TRACKING_URI to the MLflow server the cluster's "
            "sweeps log to (the origin run is there, and the rerun is awaited there)"
        )
    store = root / ".sweepyard" / "mlflow"
    if not (store / "mlflow.db").exists():
        raise RerunError(
            f"no MLFLOW_TRACKING_URI, and no local MLflow store in {store}: set it to the "
            "server the origin run is on"
        )
    from pipelines.backends.mlflow_server import mlflow_server

    with mlflow_server(store) as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            yield server.url
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def new_run_id(shared: Path, sweep_id: str, trial: str) -> str | None:
    """The rerun trial's MLflow run, from its ``result.json``."""
    try:
        doc = json.loads((trial_dir(shared, sweep_id, trial) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(doc["run_id"]) if isinstance(doc, dict) and doc.get("run_id") else None

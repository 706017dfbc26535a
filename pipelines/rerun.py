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
import copy
import json
import os
import struct
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import provenance as pv
from components.contract import RESULT_FILE, check_sweep_id, shared_root, trial_dir
from components.contract import trial_id as trial_id_of
from components.runtime.continue_trial import STATE_DIRS
from pipelines import drift
from pipelines.backends import BACKENDS, pick_backend
from pipelines.config import SweepConfig, load_config, parse_config

EXIT_REFUSED = 2
CONTINUE_STEP = "continue-from"  # the step that carries the origin trial's state over


class RerunError(Exception):
    """Nothing to rerun, or no way to: exit 2 with the message."""


@dataclass(frozen=True)
class Origin:
    """The run a rerun reproduces."""

    run_id: str
    experiment: str
    sweep_id: str
    trial_id: str
    pipeline: str
    params: dict[str, Any]
    tags: Mapping[str, str]


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
            print(f"continuing from the origin's {' and '.join(d + '/' for d in STATE_DIRS)}")
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


@dataclass(frozen=True)
class RerunPlan:
    """What the rerun's manifest does beyond the origin's one trial."""

    origin: Origin
    sweep_id: str
    pin: drift.RecordedData | None  # the recorded data version its fetch step hands over
    continue_from: str | None  # the origin's sweep, whose trial state a first step carries over


def refuse(origin: Origin, drifts: list[drift.Drift]) -> None:
    print(f"rerun of {origin.run_id} refused: what it recorded has drifted:", file=sys.stderr)
    for d in drifts:
        print(str(d), file=sys.stderr)
    print("(--allow-drift, or ALLOW_DRIFT=1, runs it anyway)", file=sys.stderr)


def pinned_data(
    cfg: SweepConfig, data: drift.RecordedData | None, drifts: list[drift.Drift]
) -> drift.RecordedData | None:
    """The recorded data version the rerun must read as it is, or ``None`` (its fetch fetches).

    Here, the recorded version whenever it is complete on the shared disk. On a cluster (its disk
    is not here) only when fetching would read something else: the source drifted, cannot be
    listed, or the pipeline has no data step now; the pinning step fails, naming the folder,
    when the recorded version is gone.
    """
    if data is None:
        return None
    if data.complete is None:
        fetch_differs = cfg.data is None or any(d.what == "data" for d in drifts)
        return data if fetch_differs else None
    return data if data.complete else None


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


def submit_to_cluster(backend: str, rcfg: SweepConfig, plan: RerunPlan, root: Path) -> int:
    """Create the rerun's Argo Workflow, or start its KFP run."""
    if backend == "argo":
        from pipelines.backends import argo

        manifest = rerun_manifest(rcfg, plan)
        return argo.submit(manifest, cfg=rcfg, sweep_id=plan.sweep_id, env=os.environ)
    if plan.pin is not None or plan.continue_from:
        what = "the recorded data version" if plan.pin is not None else "--from-checkpoint"
        raise RerunError(
            f"BACKEND=kfp cannot rerun with {what}: a KFP run has no step that hands a trial a "
            "version or a checkpoint already on the shared disk; use BACKEND=argo or the local backend"
        )
    from pipelines.backends import kfp as kfp_backend
    from pipelines.build.kfp import compile_package

    package = root / ".sweepyard" / "kfp" / f"{rcfg.name}-{plan.sweep_id}.kfp.yaml"
    package.parent.mkdir(parents=True, exist_ok=True)
    compile_package(rcfg, package)
    return kfp_backend.submit(package, cfg=rcfg, sweep_id=plan.sweep_id, env=os.environ)


TERMINAL = {"FINISHED": 0, "FAILED": 1, "KILLED": 1}


def wait_for_run(
    client: Any,
    experiment: str,
    sweep_id: str,
    trial: str,
    timeout_s: float,
    poll_s: float = 5.0,
) -> tuple[int, str | None]:
    """Wait on the MLflow server for the rerun trial's run to end (a cluster's rerun): its exit
    (0 finished, 1 failed or killed, 124 still running after ``timeout_s``) and the run's id."""
    exp = client.get_experiment_by_name(experiment)
    where = f"tags.`{pv.TAG_SWEEP}` = '{sweep_id}' and tags.`{pv.TAG_TRIAL}` = '{trial}'"
    where += f" and tags.`{pv.TAG_ROLE}` = 'trial'"
    deadline, seen = time.monotonic() + timeout_s, None
    print(
        f"waiting for trial {trial} of {sweep_id} on {client.tracking_uri} (up to {timeout_s:.0f} s)"
    )
    while True:
        runs = client.search_runs([exp.experiment_id], where) if exp is not None else []
        if runs:
            run = runs[0]
            if run.info.status != seen:
                seen = run.info.status
                print(f"  run {run.info.run_id}: {seen}", flush=True)
            if seen in TERMINAL:
                return TERMINAL[seen], run.info.run_id
        if time.monotonic() >= deadline:
            print(
                f"rerun {sweep_id}: its trial has not ended after {timeout_s:.0f} s; it goes on "
                "in the cluster (WAIT_TIMEOUT=... waits longer)",
                file=sys.stderr,
            )
            return 124, None
        if exp is None:
            exp = client.get_experiment_by_name(experiment)
        time.sleep(poll_s)


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


def find_origin(client: Any, run_id: str | None, trial: str | None, sweep: str | None) -> Origin:
    """The origin run, by id or by its trial and sweep tags (RerunError when there is none)."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise RerunError(f"no MLflow run {run_id}: {exc.message}") from None
    else:
        try:
            check_sweep_id(sweep or "")
        except ValueError as exc:
            raise RerunError(f"--sweep-id: {exc}") from None
        if not (trial or "").isalnum():
            raise RerunError(f"--trial {trial!r}: a trial id is letters and digits")
        experiments = [e.experiment_id for e in client.search_experiments()]
        where = f"tags.`{pv.TAG_SWEEP}` = '{sweep}' and tags.`{pv.TAG_TRIAL}` = '{trial}'"
        runs = client.search_runs(experiments, f"{where} and tags.`{pv.TAG_ROLE}` = 'trial'")
        if not runs:
            raise RerunError(f"no MLflow run of trial {trial} in sweep {sweep}")
        run = runs[0]
    tags = dict(run.data.tags)
    if tags.get(pv.TAG_ROLE) != "trial":
        raise RerunError(f"run {run.info.run_id} is not a sweepyard trial's run")
    try:
        params = json.loads(tags[pv.TAG_PARAMS])
    except (KeyError, ValueError):
        raise RerunError(
            f"run {run.info.run_id} has no recorded lineage ({pv.TAG_PARAMS}): it ran before "
            "sweepyard recorded lineage, and cannot be rerun"
        ) from None
    if trial_id_of(params) != tags.get(pv.TAG_TRIAL):
        raise RerunError(f"run {run.info.run_id}: its recorded params are not its trial's")
    return Origin(
        run_id=run.info.run_id,
        experiment=client.get_experiment(run.info.experiment_id).name,
        sweep_id=tags[pv.TAG_SWEEP],
        trial_id=tags[pv.TAG_TRIAL],
        pipeline=tags.get(pv.TAG_PIPELINE) or "sweep",
        params=params,
        tags=tags,
    )


def rerun_config(cfg: SweepConfig, origin: Origin, pin: drift.RecordedData | None) -> SweepConfig:
    """``cfg`` as a sweep of the origin's one trial (see the module's docstring)."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    search = raw["search"]
    raw["search"] = {
        **{
            k: search[k]
            for k in ("objective", "max_failed_trials", "max_cost", "max_gpu_hours")
            if k in search
        },
        "max_trials": 1,
        "space": {"grid": {k: [v] for k, v in origin.params.items()}},  # one trial: the origin's
    }
    raw["parallelism"] = 1
    raw["tracking"] = {**raw["tracking"], "experiment": origin.experiment, "model_name": None}
    raw.pop("schedule", None)
    if pin is not None and cfg.data is None:  # the fetch step is replaced
        raw["data"] = {"source": pin.source or "recorded", "dataset": pin.dataset}
    return parse_config(raw, source=f"the rerun of {origin.run_id}")


def rerun_manifest(rcfg: SweepConfig, plan: RerunPlan) -> dict[str, Any]:
    """The validated Argo manifest of the rerun (``rcfg``: :func:`rerun_config`'s): its fetch step
    hands over the pinned data version; with ``continue_from``, a first step carries the origin
    trial's checkpoints over (:mod:`components.runtime.continue_trial`) before train starts."""
    from pipelines.build.argo import build
    from pipelines.validate import validate_or_raise

    manifest = build(rcfg).to_dict()
    templates = manifest["spec"]["templates"]
    by_name = {t["name"]: t for t in templates}
    if plan.pin is not None:
        container = by_name["fetch"]["container"]
        container["command"] = ["python", "-m", "components.runtime.lineage"]
        container["args"] = ["pin", "--dataset", plan.pin.dataset, "--hash", plan.pin.hash]
    if plan.continue_from:
        step = copy.deepcopy(by_name["plan"])  # the same image, disk, env and retries
        step.pop("outputs", None)
        step["name"] = CONTINUE_STEP
        step["container"]["command"] = ["python", "-m", "components.runtime.continue_trial"]
        step["container"]["args"] = [
            "--from-sweep", plan.continue_from, "--trial", plan.origin.trial_id,
            "--to-sweep", "{{workflow.parameters.sweep-id}}",
        ]  # fmt: skip
        templates.append(step)
        dag = by_name[manifest["spec"]["entrypoint"]]["dag"]["tasks"]
        dag.insert(0, {"name": CONTINUE_STEP, "template": CONTINUE_STEP})
        train = next(t for t in dag if t["name"] == "train")
        train["depends"] = f"({train['depends']}) && {CONTINUE_STEP}"
    validate_or_raise(manifest, f"rerun of {plan.origin.run_id}")
    return manifest


def new_run_id(shared: Path, sweep_id: str, trial: str) -> str | None:
    """The rerun trial's MLflow run, from its ``result.json``."""
    try:
        doc = json.loads((trial_dir(shared, sweep_id, trial) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(doc["run_id"]) if isinstance(doc, dict) and doc.get("run_id") else None


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def compare_histories(
    client: Any, origin: str, new: str, since: int | None = None
) -> tuple[list[str], int, bool]:
    """One line per metric of the origin run: the two histories, step by step, bit for bit
    (only the steps after ``since`` when given); the points compared; whether all were equal."""
    lines, compared, identical = [], 0, True
    for key in sorted(client.get_run(origin).data.metrics):
        before, after = (
            {m.step: float(m.value) for m in client.get_metric_history(run, key)
             if since is None or m.step > since}
            for run in (origin, new)
        )  # fmt: skip
        line, same = compare_metric(key, before, after)
        lines.append(line)
        compared += len(set(before) | set(after))
        identical = identical and same
    return lines, compared, identical


def compare_metric(key: str, before: dict[int, float], after: dict[int, float]) -> tuple[str, bool]:
    """``key: identical (N steps)``, or ``key: differs: ...`` (the largest difference and its step,
    and the steps only one of the runs has)."""
    common = sorted(set(before) & set(after))
    differing = [s for s in common if _bits(before[s]) != _bits(after[s])]
    missing, extra = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    if not differing and not missing and not extra:
        return f"{key}: identical ({_steps(len(common))})", True
    parts = []
    if differing:
        gaps = {s: abs(before[s] - after[s]) for s in differing}
        worst = max(differing, key=lambda s: (gaps[s] if gaps[s] == gaps[s] else float("inf"), -s))
        parts.append(f"largest difference {gaps[worst]:.2g} at step {worst}")
    elif common:
        are = "is" if len(common) == 1 else "are"
        parts.append(f"the {_steps(len(common))} both have {are} identical")
    if missing:
        parts.append(f"{_steps(len(missing))} missing in the rerun ({_span(missing)})")
    if extra:
        parts.append(f"{_steps(len(extra))} only in the rerun ({_span(extra)})")
    return f"{key}: differs: {'; '.join(parts)}", False


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _span(steps: list[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"

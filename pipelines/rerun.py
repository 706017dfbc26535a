"""``make rerun RUN=<mlflow run id>``: one trial again, from what its MLflow run recorded.

``python -m pipelines rerun --run ID | --trial T --sweep-id S [--allow-drift] [--from-checkpoint]
[--pipeline P]`` reads the origin run's lineage (:mod:`components.runtime.lineage`), compares it
with what is here now (:mod:`pipelines.drift`) and refuses, exit 2 and one line per difference,
unless ``--allow-drift`` (the differences then become ``sweepyard.drift.<what>`` tags of the new
run). Otherwise it runs the trial again, here (the local backend), as a sweep of one trial:
``rerun-<trial id>-<6 hex>``, its space the recorded params (a grid of one value each: the plan
has exactly that trial), its data the recorded version, its run tagged ``sweepyard.origin_run_id``, in the origin's
experiment; the registry is left alone (no registration) and early stopping is off (a study of one
trial). ``--from-checkpoint`` copies the origin trial's ``checkpoints/`` and ``work/`` first, so it
continues where the origin's last checkpoint left it. Then every metric's history is compared with
the origin's, step by step and bit for bit.

The pipeline is the one the run recorded (``sweepyard.pipeline``), or ``--pipeline`` (a name or a
YAML file). Without ``MLFLOW_TRACKING_URI`` the local store (``.sweepyard/mlflow``, where local
sweeps log) is served for the rerun. Exit status: 0 the rerun ran (identical or not: the output
says), 1 it failed, 2 refused or nothing to rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import struct
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import provenance as pv
from components.contract import (
    CHECKPOINTS_DIR,
    RESULT_FILE,
    WORK_DIR,
    check_sweep_id,
    checkpoints_dir,
    latest_file,
    shared_root,
    trial_dir,
)
from components.contract import trial_id as trial_id_of
from pipelines import drift
from pipelines.config import SweepConfig, load_config, parse_config

EXIT_REFUSED = 2
STATE_DIRS = (CHECKPOINTS_DIR, WORK_DIR)  # what --from-checkpoint carries over


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
    with _tracking(root) as uri:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        origin = find_origin(client, args.run, args.trial, args.sweep_id)
        cfg = load_config(args.pipeline or origin.pipeline, image=os.environ.get("IMAGE") or None)
        shared = shared_root(default=root / ".sweepyard" / "shared")
        shared = shared / cfg.cluster.claim  # the local backend's folder of the claim
        drifts, data = drift.check(origin.tags, cfg, shared)
        if drifts and not args.allow_drift:
            print(
                f"rerun of {origin.run_id} refused: what it recorded has drifted:",
                file=sys.stderr,
            )
            for d in drifts:
                print(str(d), file=sys.stderr)
            print("(--allow-drift, or ALLOW_DRIFT=1, runs it anyway)", file=sys.stderr)
            return EXIT_REFUSED
        for d in drifts:
            print(f"drift allowed: {d}")
        manifest = rerun_manifest(cfg, origin, data)
        sweep_id = f"rerun-{origin.trial_id}-{uuid.uuid4().hex[:6]}"
        since = None  # the step the rerun continues from: points up to it are the origin's
        if args.from_checkpoint:
            since = continue_from(shared, origin, trial_dir(shared, sweep_id, origin.trial_id))
        code = _run(manifest, origin, sweep_id, root)
        new_run = new_run_id(shared, sweep_id, origin.trial_id)
        if new_run is None:
            print(f"rerun {sweep_id}: the trial left no MLflow run (exit {code})", file=sys.stderr)
            return code or 1
        tags = {pv.TAG_ORIGIN: origin.run_id}
        tags.update({pv.DRIFT_TAG_PREFIX + d.what: d.detail[: pv.MAX_TAG_LENGTH] for d in drifts})
        for key, value in tags.items():
            client.set_tag(new_run, key, value)
        lines, compared, identical = compare_histories(client, origin.run_id, new_run, since)
        print("\n".join(lines))
        verdict = "bitwise identical to" if identical else "differs from"
        if not compared:
            verdict = "nothing computed to compare with"
        print(f"rerun {new_run}: {verdict} {origin.run_id}", flush=True)
        return code


def _run(manifest: dict[str, Any], origin: Origin, sweep_id: str, root: Path) -> int:
    """The rerun's sweep, on the local backend."""
    from pipelines.backends.local import cli as local_cli

    print(f"rerun of {origin.run_id} (trial {origin.trial_id} of {origin.sweep_id}): {sweep_id}")
    return local_cli.submit(
        manifest, sweep_id=sweep_id, chaos=0.0, project_root=root, progress=sys.stdout.isatty()
    )


@contextlib.contextmanager
def _tracking(root: Path) -> Iterator[str]:
    """``MLFLOW_TRACKING_URI``, else a loopback server over the local store for the rerun (its
    steps log there too: the variable is set while it runs)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        yield uri
        return
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


def rerun_config(cfg: SweepConfig, origin: Origin, data: drift.RecordedData | None) -> SweepConfig:
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
    if data is not None and data.complete and cfg.data is None:  # the fetch step is replaced
        raw["data"] = {"source": data.source or "recorded", "dataset": data.dataset}
    return parse_config(raw, source=f"the rerun of {origin.run_id}")


def rerun_manifest(
    cfg: SweepConfig, origin: Origin, data: drift.RecordedData | None
) -> dict[str, Any]:
    """The validated Argo manifest of the rerun; its fetch step pins the recorded data version
    when that is complete on the shared disk."""
    from pipelines.sweep import build
    from pipelines.validate import validate_or_raise

    rcfg = rerun_config(cfg, origin, data)
    manifest = build(rcfg).to_dict()
    if data is not None and data.complete:
        for template in manifest["spec"]["templates"]:
            if template.get("name") == "fetch":
                container = template["container"]
                container["command"] = ["python", "-m", "components.runtime.lineage"]
                container["args"] = ["pin", "--dataset", data.dataset, "--hash", data.hash]
    validate_or_raise(manifest, f"rerun of {origin.run_id}")
    return manifest


def continue_from(shared: Path, origin: Origin, dst: Path) -> int | None:
    """``--from-checkpoint``: the origin's state copied into the new trial; the step it resumes
    from (``LATEST``'s; None when the pointer cannot be read)."""
    src = trial_dir(shared, origin.sweep_id, origin.trial_id)
    copied = copy_state(src, dst)
    print(f"continuing from the origin's {' and '.join(copied)} ({src})")
    try:
        latest = latest_file(checkpoints_dir(dst)).read_text().strip()
        step = int(latest.rsplit("-", 1)[1])
    except (OSError, IndexError, ValueError):
        return None
    print(f"compared: the steps after {step}, the checkpoint's (the points up to it are replayed)")
    return step


def copy_state(src: Path, dst: Path) -> list[str]:
    """Copy the origin trial's checkpoints and working folder into the new trial's folder."""
    copied = []
    for name in STATE_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, symlinks=True)
            copied.append(f"{name}/")
    if not copied:
        raise RerunError(f"--from-checkpoint: {src} has no checkpoints/ or work/ to continue from")
    return copied


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

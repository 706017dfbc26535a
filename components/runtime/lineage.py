"""A trial's lineage, recorded once (DESIGN.md, "Outcomes"): what ``make rerun`` needs to run it
again, or to say what drifted.

The trial's first attempt writes ``lineage.json`` in its folder and, on the attempt that creates
its MLflow run, the same as tags (:mod:`components.provenance` names them), MLflow's own source
tags (``mlflow.source.git.commit``, ``.name``, ``.type=JOB``: the runs page's Source column) and
the dataset as a dataset input (name, content hash as digest, the version's folder as source: the
runs page's Dataset column). Recorded: the commit, whether the tree was dirty and a hash of its
diff, the lock's sha256, the image and its digest, the trial spec hash (and the workflow's hash
where a launcher gives one), the dataset version, the params and seed, Python, torch, CUDA and the
device. Never the environment as a whole: no secret can get in.

``python -m components.runtime.lineage data-version SOURCE [--query Q]`` prints the content hash
the source lists now (a listing, no download; for a database the query runs: its result is the
listing); ``... pin --dataset D --hash H`` is the fetch step of a rerun: it hands the trial a
version already complete on the shared disk, as fetch's outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components import provenance as pv
from components.contract import (
    EXIT_GIVE_UP,
    EXIT_RETRY,
    SharedRootError,
    canonical_json,
    complete_file,
    continued_file,
    dataset_dir,
    lineage_file,
    manifest_file,
    shared_root,
)
from components.fsio import atomic_write_json

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from components.runtime.trial_spec import TrialSpec

log = logging.getLogger("components.train")
SOURCE_TYPE = "JOB"  # MLflow's source types: NOTEBOOK, JOB, PROJECT, LOCAL
DATA_CONTEXT = "training"


class Lineage:
    """The lineage of one trial: collected at most once, written and logged once."""

    def __init__(self, spec: TrialSpec, trial_dir: Path, env: Mapping[str, str] | None = None):
        self.spec = spec
        self.path = lineage_file(trial_dir)
        self.env = os.environ if env is None else env

    @functools.cached_property
    def doc(self) -> dict[str, Any]:
        """The first attempt's record (``lineage.json``), else collected now."""
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(found, dict):
                return found
        return {**collect(self.spec, self.env), "continued_from": continued_from(self.path.parent)}

    def write_once(self) -> None:
        """``lineage.json``, unless an earlier attempt wrote it (never rewritten)."""
        if self.path.exists():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.doc)
        except OSError as exc:  # the record is worth a warning, never a failed trial
            log.warning("could not write %s: %s", self.path, exc)

    def log_to(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """The lineage as tags and a dataset input of the run (the attempt that creates it): the
        dataset first, then one batch of the lineage's tags, ``tags`` and ``params`` (last: they
        mark the run's lineage as logged)."""
        from components.runtime import tracking
        from components.runtime.mlflow_rest import RestClient

        data = self.doc.get("data")
        if isinstance(client, RestClient):
            rest = dataset_input_rest(data)
            if rest is not None:
                client.log_inputs(run_id, [rest])
        else:
            dataset = dataset_input(data)
            if dataset is not None:
                client.log_inputs(run_id, datasets=[dataset])
        batch = {**dict(sorted(_tags(self.doc).items())), **dict(tags or {})}
        tracking.log_batch(client, run_id, tags=batch, params=params)


def collect(spec: TrialSpec, env: Mapping[str, str]) -> dict[str, Any]:
    """What this attempt runs with (see the module's docstring)."""
    from components.runtime.trial import now_iso

    git = pv.git_state(env)
    spec_text = env.get(pv.TRIAL_SPEC_ENV, "")
    try:
        spec_args = json.loads(spec_text) if spec_text else None
    except ValueError:
        spec_args = None
    seed = spec.params.get("seed")
    return {
        "sweep_id": spec.sweep_id,
        "trial_id": spec.trial_id,
        "pipeline": env.get(pv.PIPELINE_ENV, ""),
        "workflow": env.get("SWEEPYARD_WORKFLOW_NAME", ""),
        "params": spec.params,
        "seed": seed if isinstance(seed, int | float | str) else None,
        "code": {
            "git_commit": git.commit,
            "git_dirty": git.dirty,
            "git_diff_sha256": git.diff_sha256,
        },
        "lock": {"path": str(pv.lock_path(env)), "sha256": pv.lock_sha256(env)},
        "image": {
            "reference": env.get(pv.IMAGE_ENV, ""),
            "digest": env.get(pv.IMAGE_DIGEST_ENV, ""),
        },
        "trial_spec": {
            "sha256": pv.text_sha256(spec_text) if spec_text else "",
            "args": spec_args,
        },
        "workflow_hash": env.get(pv.WORKFLOW_HASH_ENV, ""),
        "data": _data(spec),
        "environment": environment(spec.device, spec.threads),
        "recorded_at": now_iso(),
    }


def continued_from(trial_dir: Path) -> dict[str, Any] | None:
    """Whose checkpoint a rerun's trial continues (``continued.json``, written by the
    ``continue-from`` step, :mod:`components.runtime.continue_trial`), or ``None``."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(continued_file(trial_dir).read_text(encoding="utf-8"))
        return found if isinstance(found, dict) else None
    return None


def _data(spec: TrialSpec) -> dict[str, Any] | None:
    """The dataset version the trial reads: its hash, folder and (from MANIFEST.json) source."""
    if spec.data is None:
        return None
    manifest: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(manifest_file(spec.data).read_text(encoding="utf-8"))
        manifest = found if isinstance(found, dict) else {}
    on_disk = spec.data.name == spec.data_hash  # data/<dataset>/<hash>/
    return {
        "dataset": manifest.get("dataset") or (spec.data.parent if on_disk else spec.data).name,
        "hash": spec.data_hash,
        "path": str(spec.data),
        "source": manifest.get("source", ""),
        "kind": manifest.get("kind", ""),
        **({"query": manifest["query"]} if manifest.get("query") else {}),
    }


def environment(device: str, threads: int) -> dict[str, Any]:
    """Python, torch and CUDA versions and the device model (no CUDA context is created)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": "",
        "cuda": "",
        "device": f"cpu: {_cpu_model()}",
        "threads": threads,
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = str(torch.__version__)
    info["cuda"] = torch.version.cuda or ""
    if device != "cpu" and torch.cuda.is_available():
        info["device"] = f"cuda: {', '.join(_gpu_models()) or 'model unknown'}"
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _gpu_models() -> list[str]:
    """The visible GPUs' names, as nvidia-smi lists them (empty when it cannot say)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [n.strip() for n in out.stdout.splitlines() if n.strip()] if out.returncode == 0 else []


def tags(doc: Mapping[str, Any]) -> dict[str, str]:
    """The lineage as run tags (a value past MLflow's limit is left to ``lineage.json``)."""
    code, data = doc.get("code") or {}, doc.get("data") or {}
    env, spec = doc.get("environment") or {}, doc.get("trial_spec") or {}
    args = spec.get("args") or []
    continued = doc.get("continued_from") or {}
    found = {
        pv.TAG_PIPELINE: doc.get("pipeline") or "",
        pv.TAG_DIRTY: str(bool(code.get("git_dirty"))).lower(),
        pv.TAG_DIFF: code.get("git_diff_sha256") or "",
        pv.TAG_LOCK: (doc.get("lock") or {}).get("sha256") or "",
        pv.TAG_IMAGE_DIGEST: (doc.get("image") or {}).get("digest") or "",
        pv.TAG_WORKFLOW_HASH: doc.get("workflow_hash") or "",
        pv.TAG_SPEC_HASH: spec.get("sha256") or "",
        pv.TAG_SPEC: json.dumps(args, separators=(",", ":")) if args else "",
        pv.TAG_PARAMS: canonical_json(doc.get("params") or {}),
        pv.TAG_SEED: "" if doc.get("seed") is None else str(doc["seed"]),
        pv.TAG_DATASET: data.get("dataset", ""),
        pv.TAG_DATA_PATH: data.get("path", ""),
        pv.TAG_DATA_SOURCE: data.get("source", ""),
        pv.TAG_TORCH: env.get("torch", ""),
        pv.TAG_CUDA: env.get("cuda", ""),
        pv.TAG_DEVICE: env.get("device", ""),
        "mlflow.source.git.commit": code.get("git_commit") or "unknown",
        "mlflow.source.name": source_name(code.get("git_commit"), doc.get("pipeline")),
        "mlflow.source.type": SOURCE_TYPE,
    }
    if continued.get("step") is not None:  # a rerun's trial that continued another's checkpoint
        found[pv.TAG_CONTINUED_STEP] = continued["step"]
    return {k: str(v) for k, v in found.items() if len(str(v)) <= pv.MAX_TAG_LENGTH}


def source_name(commit: str | None, pipeline: str | None) -> str:
    """What the runs page's Source column shows: the short commit first (the column is narrow and
    cuts the end), then the pipeline."""
    name = pipeline or "sweepyard"
    return f"{commit[:7]} {name}" if commit and commit != "unknown" else name


def dataset_input_rest(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """:func:`dataset_input` in MLflow's REST form, without importing mlflow: the same name,
    digest and source (``local`` for a folder, the scheme for a URI such as ``gs://``)."""
    if not data:
        return None
    path = str(data["path"])
    scheme = path.split("://", 1)[0] if "://" in path else ""
    source_type = {"": "local", "file": "local", "gs": "gs", "s3": "s3"}.get(scheme)
    if source_type is None:
        log.warning("no MLflow dataset source for %s", path)
        return None
    name, source = str(data["dataset"]), json.dumps({"uri": path})
    digest = str(data["hash"])
    if not digest:  # as MetaDataset computes it
        config = {"name": name, "source": source, "source_type": source_type, "schema": ""}
        digest = hashlib.sha256(json.dumps(config).encode("utf-8")).hexdigest()[:8]
    return {
        "tags": [{"key": "mlflow.data.context", "value": DATA_CONTEXT}],
        "dataset": {"name": name, "digest": digest, "source_type": source_type, "source": source},
    }


def dataset_input(data: Mapping[str, Any] | None) -> Any:
    """An MLflow ``DatasetInput`` of the version (None without data): name, hash, folder."""
    if not data:
        return None
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    try:
        with warnings.catch_warnings():  # two registered classes both read local paths
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(data["path"]))
    except Exception as exc:  # a folder MLflow has no source type for: the tags still say it
        log.warning("no MLflow dataset source for %s: %s", data["path"], exc)
        return None
    # (mlflow's Dataset declares ``profile`` abstract; MetaDataset has none to give)
    dataset = MetaDataset(source, str(data["dataset"]), str(data["hash"]) or None)  # type: ignore[abstract]
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=DATA_CONTEXT)
    d = dataset.to_dict()  # the public form of what the run records (no _to_mlflow_entity)
    entity = Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type=d["source_type"],
        source=d["source"],
        schema=d.get("schema"),
        profile=d.get("profile"),
    )
    return DatasetInput(dataset=entity, tags=[context])


# --------------------------------------------------------------------------- CLI


def data_version(source: str, query: str | None) -> int:
    """Print ``{"hash": ...}`` of what the source lists now, or ``{"error": ...}``."""
    from components.data.sources import parse_source
    from components.data.storage import FetchError, TransientFetchError

    try:
        found = parse_source(source, query).list_version().hash
    except FetchError as exc:
        print(json.dumps({"error": str(exc)}))
        return EXIT_GIVE_UP
    except TransientFetchError as exc:
        print(json.dumps({"error": f"transient: {exc}"}))
        return EXIT_RETRY
    print(json.dumps({"hash": found}))
    return 0


def pin(dataset: str, digest: str) -> int:
    """A rerun's fetch: the recorded version, complete on the shared disk, as fetch's outputs."""
    from components.data.storage import FetchError, validate_dataset
    from components.fetch import FetchResult, write_outputs

    try:
        folder = dataset_dir(shared_root(), validate_dataset(dataset), digest)
    except (FetchError, SharedRootError) as exc:
        print(f"pin: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    if "/" in digest or not complete_file(folder).is_file():
        print(f"pin: {folder} is not a complete dataset version", file=sys.stderr)
        return EXIT_GIVE_UP
    write_outputs(FetchResult(path=folder, hash=digest, downloaded=False))
    print(json.dumps({"path": str(folder), "hash": digest}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m components.runtime.lineage", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("data-version", help="the content hash a source lists now")
    v.add_argument("source")
    v.add_argument("--query", default=None)
    pn = sub.add_parser("pin", help="a complete version as the fetch step's outputs")
    pn.add_argument("--dataset", required=True)
    pn.add_argument("--hash", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.command == "data-version":
        return data_version(args.source, args.query)
    return pin(args.dataset, args.hash)


if __name__ == "__main__":
    sys.exit(main())


_tags = tags  # (Lineage.log_to's argument of that name hides it)

"""The rerun as a sweep of one trial: its config, and the manifest that pins its data version and
carries the origin trial's checkpoint over (``continue-from``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pipelines import drift
from pipelines.config import SweepConfig, parse_config
from pipelines.rerun.origin import Origin

CONTINUE_STEP = "continue-from"  # the step that carries the origin trial's state over


@dataclass(frozen=True)
class RerunPlan:
    """What the rerun's manifest does beyond the origin's one trial."""

    origin: Origin
    sweep_id: str
    pin: drift.RecordedData | None  # the recorded data version its fetch step hands over
    continue_from: str | None  # the origin's sweep, whose trial state a first step carries over


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

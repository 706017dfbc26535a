"""The run a rerun reproduces: found by its id, or by its trial's and sweep's tags."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components import provenance as pv
from components.contract import check_sweep_id
from components.contract import trial_id as trial_id_of


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

"""Addresses a person opens to see a sweep (pure: for ``pipelines/`` and the components alike)."""

from __future__ import annotations

from urllib.parse import quote

TAG_SWEEP = "sweepyard.sweep_id"  # on the sweep's parent run and on every trial's run
TAG_ROLE = "sweepyard.role"  # "sweep" (the parent run) or "trial"
TAG_TRIAL = "sweepyard.trial_id"  # on every trial's run


RUN_NAME_SORT_KEY = "tags.`mlflow.runName`"  # the MLflow UI's key for its Run Name column


def sweep_runs_url(
    base: str, experiment_id: str, sweep_id: str, objective: str | None = None, direction: str = ""
) -> str:
    """The MLflow UI's training runs of the experiment: the sweep's trials, best first.

    The trials only, ranked by ``objective`` (``direction`` minimize or maximize; by run name when
    there is none, e.g. a sweep that stopped before compare). The UI nests child runs under their
    parent, collapsed, unless the table is sorted by something other than the start time: a
    filtered table sorted by the objective lists every trial, in the leaderboard's order.
    """
    search = quote(f"tags.`{TAG_SWEEP}` = '{sweep_id}' and tags.`{TAG_ROLE}` = 'trial'", safe="")
    key, ascending = (
        (f"metrics.`{objective}`", direction != "maximize")
        if objective
        else (RUN_NAME_SORT_KEY, True)
    )
    order = f"&orderByKey={quote(key, safe='')}&orderByAsc={str(ascending).lower()}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?searchFilter={search}{order}"


def tensorboard_sweep_url(base: str, sweep_id: str) -> str:
    """TensorBoard's scalars page showing only the sweep's runs (one per trial)."""
    return f"{base.rstrip('/')}/#scalars&regexInput={quote(sweep_id, safe='')}"

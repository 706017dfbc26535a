"""Addresses a person opens to see a sweep (pure: for ``pipelines/`` and the components alike)."""

from __future__ import annotations

from urllib.parse import quote

TAG_SWEEP = "sweepyard.sweep_id"  # on the sweep's parent run and on every trial's run
TAG_ROLE = "sweepyard.role"  # "sweep" (the parent run) or "trial"


def sweep_runs_url(base: str, experiment_id: str, sweep_id: str) -> str:
    """The MLflow UI's training runs of the experiment, filtered to the sweep's trials.

    The trials only: with the parent run in the result, the UI folds its children under it.
    """
    search = quote(f"tags.`{TAG_SWEEP}` = '{sweep_id}' and tags.`{TAG_ROLE}` = 'trial'", safe="")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?searchFilter={search}"


def tensorboard_sweep_url(base: str, sweep_id: str) -> str:
    """TensorBoard's scalars page showing only the sweep's runs (one per trial)."""
    return f"{base.rstrip('/')}/#scalars&regexInput={quote(sweep_id, safe='')}"

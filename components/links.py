"""Addresses a person opens to see a sweep (pure: for ``pipelines/`` and the components alike)."""

from __future__ import annotations

from urllib.parse import quote

TAG_SWEEP = "sweepyard.sweep_id"  # on the sweep's parent run and on every trial's run


def sweep_runs_url(base: str, experiment_id: str, sweep_id: str) -> str:
    """The MLflow UI's runs page of the experiment, filtered to the sweep's runs (parent + trials)."""
    search = quote(f"tags.`{TAG_SWEEP}` = '{sweep_id}'", safe="")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?searchFilter={search}"


def tensorboard_sweep_url(base: str, sweep_id: str) -> str:
    """TensorBoard's scalars page showing only the sweep's runs (one per trial)."""
    return f"{base.rstrip('/')}/#scalars&regexInput={quote(sweep_id, safe='')}"

"""Reading a trial's metrics back from the MLflow tracking store; the tracking and tracking load tests
share it. No tests here.
"""

from __future__ import annotations

from typing import Any

from components.runtime import tracking


def _connector(url: str, sweep: str, trial: str, experiment: str) -> Any:
    def connect() -> tuple[Any, str]:
        client = tracking.client(url)
        return client, tracking.ensure_trial_run(
            sweep, trial, experiment=experiment, mlflow_client=client
        )

    return connect


def _steps(url: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in tracking.client(url).get_metric_history(run_id, key)]

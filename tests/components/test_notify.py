"""notify: the real CLI posts through slack-sdk's WebhookClient to a loopback receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.contract import canonical_json, trial_id
from components.notify import duration
from pipelines.backends.mlflow_server import free_port
from tests.support.notify import WEBHOOK_PATH, _env, _fields, _notify, _payload
from tests.support.receivers import receiving


def _all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload)


SUMMARY = {
    "sweep_id": "sweep-abc12",
    "status": "succeeded",
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "best": {
        "trial_id": "6f38ad711fb0",
        "params": {"lr": 0.03, "hidden": 128},
        "value": 0.2104,
        "run_id": "r1",
    },
    "trials": {"total": 6, "done": 4, "failed": 2},
    "failed": [
        {"trial_id": "25921fa00000", "error": "RuntimeError: loss is NaN at step 20"},
        {"trial_id": "b4d6075efb2c", "error": "no result"},
    ],
    "preemptions": 3,
    "wall_seconds": 3725.0,
    "mlflow": {
        "experiment_url": "http://mlflow.test/#/experiments/7",
        "run_url": "http://mlflow.test/#/experiments/7/runs/abc",
    },
}


def test_success_digest_carries_status_best_counts_preemptions_time_and_links(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    (shared / "sweeps" / "sweep-abc12").mkdir(parents=True)
    (shared / "sweeps" / "sweep-abc12" / "summary.json").write_text(json.dumps(SUMMARY))
    with receiving() as slack:
        env = _env(
            shared,
            SLACK_WEBHOOK_URL=slack.url + WEBHOOK_PATH,
            TENSORBOARD_URL="http://tb.test/",
            ARGO_UI_URL="https://argo.test/",
            ARGO_NAMESPACE="sweepyard",
        )
        proc = _notify(env, "Succeeded")
        payload = _payload(slack)
    assert proc.returncode == 0, proc.stderr
    assert "Slack message sent for sweep sweep-abc12 (HTTP 200)" in proc.stderr
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Sweep sweep-abc12: Succeeded"},
    }
    fields = _fields(payload)
    assert fields["Workflow status"] == ":white_check_mark: Succeeded"
    assert fields["Best trial"] == "`6f38ad711fb0` val_loss = *0.2104*\nhidden=128, lr=0.03"
    assert fields["Trials"] == "4 done / 2 failed (of 6)"
    assert fields["Preemptions survived"] == "3"
    assert fields["Wall time"] == "1h 2m 5s"
    text = _all_text(payload)
    assert "`25921fa00000`: RuntimeError: loss is NaN at step 20" in text
    assert "`b4d6075efb2c`: no result" in text
    assert "<http://mlflow.test/#/experiments/7/runs/abc|MLflow sweep run>" in text
    assert "<http://mlflow.test/#/experiments/7|MLflow experiment>" in text
    assert "<http://tb.test|TensorBoard>" in text
    assert "<https://argo.test/workflows/sweepyard/sweep-abc12|Argo workflow>" in text
    assert payload["text"] == (
        "Sweep sweep-abc12 Succeeded: 4 done / 2 failed (of 6), best 6f38ad711fb0 val_loss=0.2104"
    )


def test_failed_sweep_without_summary_counts_trials_from_results(tmp_path: Path) -> None:
    """compare never ran (every trial failed, or the workflow died): the digest still says why."""
    shared = tmp_path / "shared"
    sweep = shared / "sweeps" / "sweep-abc12"
    plan = []
    for i, (status, error, preempt) in enumerate(
        [
            ("failed", "CUDA error: out of memory", 2),
            ("failed", "ValueError: bad lr", 0),
            (None, None, 0),
        ]
    ):
        params = {"lr": 10.0**-i}
        tid = trial_id(params)
        plan.append({"id": tid, "params": canonical_json(params)})
        if status:
            (sweep / "trials" / tid).mkdir(parents=True)
            (sweep / "trials" / tid / "result.json").write_text(
                json.dumps(
                    {"status": status, "error": error, "preemptions": preempt, "params": params}
                )
            )
    (sweep / "plan.json").write_text(json.dumps(plan))
    with receiving() as slack:
        env = _env(
            shared,
            SLACK_WEBHOOK_URL=slack.url + WEBHOOK_PATH,
            MLFLOW_TRACKING_URI="http://u:pw-9911@mlflow.test:5000",
        )
        proc = _notify(env, "Failed")
        payload = _payload(slack)
    assert proc.returncode == 0, proc.stderr
    fields = _fields(payload)
    assert fields["Workflow status"] == ":x: Failed"
    assert fields["Best trial"] == "none (no trial succeeded)"
    assert fields["Trials"] == "0 done / 3 failed (of 3)"
    assert fields["Preemptions survived"].startswith("2 (`")  # and which trial
    assert fields["Wall time"].endswith("s")
    text = _all_text(payload)
    assert (
        "CUDA error: out of memory" in text and "ValueError: bad lr" in text and "no result" in text
    )
    assert "compare did not run" in text
    assert "<http://mlflow.test:5000|MLflow>" in text  # credentials stripped from the link
    assert "pw-9911" not in text


def test_workflow_that_died_before_planning_still_notifies(tmp_path: Path) -> None:
    with receiving() as slack:
        proc = _notify(_env(tmp_path, SLACK_WEBHOOK_URL=slack.url + WEBHOOK_PATH), "Error")
        payload = _payload(slack)
    assert proc.returncode == 0, proc.stderr
    fields = _fields(payload)
    assert fields["Workflow status"] == ":boom: Error"
    assert fields["Trials"] == "unknown"
    assert "no plan: the sweep stopped early" in _all_text(payload)


def test_no_webhook_says_so_and_succeeds(tmp_path: Path) -> None:
    proc = _notify(_env(tmp_path), "Succeeded")
    assert proc.returncode == 0
    assert "SLACK_WEBHOOK_URL is not set: no Slack message sent" in proc.stderr
    assert proc.stdout.startswith("Sweep sweep-abc12 Succeeded")


def test_webhook_failure_is_logged_without_the_url_and_fails(tmp_path: Path) -> None:
    with receiving(status=500, reply=b"internal_error") as slack:
        url = slack.url + WEBHOOK_PATH
        proc = _notify(_env(tmp_path, SLACK_WEBHOOK_URL=url), "Succeeded")
    assert proc.returncode == 1
    assert "the Slack webhook failed for sweep sweep-abc12: HTTP 500: internal_error" in proc.stderr
    assert "notify-canary-3f9a" not in proc.stderr + proc.stdout

    url = f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}"  # nothing listens there
    proc = _notify(_env(tmp_path, SLACK_WEBHOOK_URL=url), "Succeeded")
    assert proc.returncode == 1
    assert "the Slack webhook failed" in proc.stderr
    assert "notify-canary-3f9a" not in proc.stderr + proc.stdout


def test_duration() -> None:
    assert duration(5) == "5s"
    assert duration(65) == "1m 5s"
    assert duration(3600) == "1h 0m 0s"
    assert duration(None) == "unknown"


def test_the_exit_handler_ends_the_parent_run_and_links_the_sweeps_runs(
    tmp_path: Path, mlflow_server: Any
) -> None:
    """Whatever step ended the sweep, notify's end leaves the parent run FINISHED or FAILED."""
    from mlflow.tracking import MlflowClient

    from components.runtime import tracking

    client = MlflowClient(mlflow_server.url)
    env = _env(
        tmp_path, MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="notify-ends"
    )
    with receiving() as slack:
        env["SLACK_WEBHOOK_URL"] = slack.url + WEBHOOK_PATH
        for sweep, status, expected in (("ok-1", "Succeeded", "FINISHED"), ("bad-1", "Failed", "FAILED")):  # fmt: skip
            proc = _notify(env, status, sweep=sweep)
            assert proc.returncode == 0, proc.stderr
            run_id = tracking.ensure_sweep_run(
                sweep, experiment="notify-ends", mlflow_client=client
            )
            run = client.get_run(run_id)
            assert run.info.status == expected and run.info.end_time
        texts = [json.dumps(json.loads(r.body)) for r in slack.requests]
    exp = client.get_experiment_by_name("notify-ends")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "notify-ends" in exp.tags["mlflow.note.content"]
    # the digest's MLflow link opens the runs of that sweep
    assert f"/#/experiments/{exp.experiment_id}/runs?searchFilter=" in texts[1]
    assert "bad-1" in texts[1].split("searchFilter=")[1]


def test_digest_names_each_preempted_trial_with_its_count(tmp_path: Path) -> None:
    from components.notify import build_message

    summary = {**SUMMARY, "preempted_trials": {"6f38ad711fb0": 2, "b4d6075efb2c": 1}}
    message = build_message(
        sweep_id="s", status="Succeeded", workflow_name="s", summary=summary, env={}
    )
    assert _fields(message)["Preemptions survived"] == "3 (`6f38ad711fb0` ×2, `b4d6075efb2c` ×1)"

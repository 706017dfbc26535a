"""Canary secrets in the environment never leave: not in a Slack payload, a Sentry event, a log,
an MLflow param or tag, a file on the shared disk, or a compiled manifest.

The sweep is run step by step with the real components (plan, fetch, train x2, compare, notify),
each a subprocess with the canaries in its environment, against a real MLflow server and loopback
receivers for Sentry and Slack. One trial is given a broken data folder so that it raises.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets
import yaml

from components.contract import trial_id
from pipelines.backends.mlflow_server import MlflowServer
from tests.support.receivers import decode_body, receiving, sentry_dsn, sentry_events

REPO = Path(__file__).resolve().parents[1]
DIGITS = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"

PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nCANARYPEMBODYxq81Zk2v\n-----END PRIVATE KEY-----\n"
CANARIES = {
    "SLACK_WEBHOOK_URL": "/services/TCANARY/BCANARY/canary-slack-9f2c71",  # the receiver's URL + this
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-41d0",
    "SWEEPYARD_DB_PASSWORD": "canary-db-password-77aa",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-e3b9",
    "HF_TOKEN": "canary-hf-token-5c6d",
}
FORBIDDEN = [*CANARIES.values(), "canary-slack-9f2c71", "CANARYPEMBODYxq81Zk2v"]


def _canary_env(tmp_path: Path) -> dict[str, str]:
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": PRIVATE_KEY}))
    return {**CANARIES, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}


def _scan(where: str, text: str) -> None:
    for canary in FORBIDDEN:
        assert canary not in text, f"canary {canary!r} leaked into {where}"


def test_compiled_manifests_carry_secret_references_not_values(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE"}
    env.update(_canary_env(tmp_path), SENTRY_DSN="http://canary-dsn-key-0d1e@127.0.0.1:9/1")
    out = tmp_path / "compiled"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "compile", "--all", "--out", str(out)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifests = sorted(out.glob("*.yaml")) + sorted(
        (REPO / "pipelines" / "compiled").glob("*.yaml")
    )
    assert len(manifests) >= 4
    for path in manifests:
        text = path.read_text()
        _scan(str(path), text)
        assert "canary-dsn-key-0d1e" not in text, path
    _scan("compile output", proc.stdout + proc.stderr)
    # The steps do get the secrets, by reference to the Kubernetes Secret.
    workflow = yaml.safe_load((out / "sweep.yaml").read_text())
    notify = next(t for t in workflow["spec"]["templates"] if t["name"] == "notify")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in notify["container"]["env"]
        if "valueFrom" in e
    }
    assert {"SENTRY_DSN", "SLACK_WEBHOOK_URL"} <= set(refs)
    assert all(ref["name"] == "sweepyard-secrets" for ref in refs.values())


@pytest.mark.slow
def test_a_sweep_leaks_no_secret_anywhere(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    shared, logs, outputs, source, broken = _make_folders(tmp_path)
    experiment = "secrets-scan"
    sweep = "sweep-canary"

    with receiving(reply=b"{}") as sentry, receiving() as slack:
        env = _sweep_env(
            tmp_path, slack.url, sentry_dsn(sentry), shared, outputs, sweep,
            mlflow_url=mlflow_server.url, experiment=experiment,
        )  # fmt: skip
        good, bad = _run_sweep(env, logs, sweep, source, broken)
        slack_bodies = [r.body.decode() for r in slack.wait_for(1)]
        sentry_raw = [decode_body(r).decode("utf-8", "replace") for r in sentry.requests]
        events = sentry_events(sentry)

    # The run really happened, so the scan below scans something.
    _assert_the_sweep_ran(outputs, good, bad, sweep, slack_bodies, events)
    _scan_payloads_logs_and_shared_disk(slack_bodies, sentry_raw, logs, shared)
    _scan_mlflow_params_and_tags(mlflow_server.url, experiment)


def _make_folders(tmp_path: Path) -> tuple[Path, Path, Path, Path, Path]:
    """shared, logs, outputs; the digits source folder; a data folder no trial can read."""
    shared, logs, outputs = tmp_path / "shared", tmp_path / "logs", tmp_path / "outputs"
    for d in (shared, logs, outputs):
        d.mkdir()
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(DIGITS, source / "digits.csv.gz")
    broken = tmp_path / "broken-data"
    broken.mkdir()
    (broken / "digits.csv").write_text("1,2,x\n3,four,5\n")
    return shared, logs, outputs, source, broken


def _sweep_env(
    tmp_path: Path,
    slack_url: str,
    dsn: str,
    shared: Path,
    outputs: Path,
    sweep: str,
    *,
    mlflow_url: str,
    experiment: str,
) -> dict[str, str]:
    """The steps' environment: the canaries, the receivers, the sweep's settings."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWEEPYARD_", "MLFLOW_", "SENTRY_"))
    }
    return {
        **base,
        **_canary_env(tmp_path),
        "SLACK_WEBHOOK_URL": slack_url + CANARIES["SLACK_WEBHOOK_URL"],
        "SENTRY_DSN": dsn,
        "PYTHONPATH": str(REPO),
        "SWEEPYARD_SHARED": str(shared),
        "SWEEPYARD_OUTPUTS": str(outputs),
        "SWEEPYARD_PIPELINE": "sweep",
        "SWEEPYARD_IMAGE": "sweepyard:canary",
        "SWEEPYARD_WORKFLOW_NAME": sweep,
        "SWEEPYARD_ATTEMPT": "0",
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLFLOW_EXPERIMENT_NAME": experiment,
    }


def _step(
    env: dict[str, str], logs: Path, name: str, *args: str, ok: tuple[int, ...] = (0,)
) -> str:
    module = name.split(":")[0]
    proc = subprocess.run(
        [sys.executable, "-m", f"components.{module}", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (logs / f"{name}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode in ok, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _run_sweep(
    env: dict[str, str], logs: Path, sweep: str, source: Path, broken: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """plan, fetch, train a good and a broken trial, compare, notify: the (good, bad) trials."""
    space = {
        "grid": {"lr": [0.01, 0.003]},
        "fixed": {"hidden": 16, "batch_size": 64, "steps": 30, "seed": 0},
    }
    trials = json.loads(
        _step(env, logs, "plan", "--sweep-id", sweep, "--space", json.dumps(space),
              "--max-trials", "4")
    )  # fmt: skip
    fetched = json.loads(
        _step(env, logs, "fetch", f"file://{source}", "--dataset", "digits")
        .strip()
        .splitlines()[-1]
    )
    common = ["--sweep-id", sweep, "--data-hash", fetched["hash"], "--objective", "val_loss",
              "--direction", "minimize", "--checkpoint-interval", "5", "--keep-checkpoints", "2",
              "--max-app-errors", "1"]  # fmt: skip
    good, bad = trials
    _step(env, logs, "train:good", "--trial-id", good["id"], "--params", good["params"],
          "--data", fetched["path"], *common)  # fmt: skip
    _step(env, logs, "train:bad", "--trial-id", bad["id"], "--params", bad["params"],
          "--data", str(broken), *common, ok=(1, 3))  # fmt: skip
    _step(env, logs, "compare", "--sweep-id", sweep, "--objective", "val_loss",
          "--direction", "minimize", "--model-name", "canary-model",
          "--budget", '{"max_failed_trials": 1}')  # fmt: skip
    _step(env, logs, "notify", "--sweep-id", sweep, "--status", "Failed", "--workflow-name", sweep)
    return good, bad


def _assert_the_sweep_ran(
    outputs: Path,
    good: dict[str, str],
    bad: dict[str, str],
    sweep: str,
    slack_bodies: list[str],
    events: list[dict[str, Any]],
) -> None:
    assert trial_id(json.loads(good["params"])) == good["id"]
    summary = json.loads((outputs / "summary").read_text())
    assert summary["trials"] == {"total": 2, "done": 1, "failed": 1, "pruned": 0, "skipped": 0}
    assert len(slack_bodies) == 1 and "Sweep sweep-canary: Failed" in slack_bodies[0]
    failing = [e for e in events if e["tags"].get("trial") == bad["id"]]
    assert failing, f"no Sentry event for the broken trial; got {[e.get('tags') for e in events]}"
    tags = failing[0]["tags"]
    assert tags["pipeline"] == "sweep" and tags["sweep"] == sweep and tags["attempt"] == "0"
    assert tags["image"] == "sweepyard:canary"


def _scan_payloads_logs_and_shared_disk(
    slack_bodies: list[str], sentry_raw: list[str], logs: Path, shared: Path
) -> None:
    for i, body in enumerate(slack_bodies):
        _scan(f"Slack payload {i}", body)
    for i, raw in enumerate(sentry_raw):
        _scan(f"Sentry envelope {i}", raw)
    for path in sorted(logs.glob("*.log")):
        _scan(str(path), path.read_text())
    for path in sorted(
        p for p in shared.rglob("*") if p.is_file()
    ):  # results, checkpoints, TB files
        _scan(str(path), path.read_bytes().decode("latin-1"))


def _scan_mlflow_params_and_tags(url: str, experiment: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) >= 3  # the sweep's parent run and the two trials
    for run in runs:
        _scan(f"MLflow params of {run.info.run_id}", json.dumps(run.data.params))
        _scan(f"MLflow tags of {run.info.run_id}", json.dumps(run.data.tags))

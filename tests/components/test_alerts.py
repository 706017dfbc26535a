"""Sentry alerts: real sentry-sdk in a real subprocess, sending to a loopback envelope receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from components.runtime import alerts
from tests.support.receivers import decode_body, receiving, sentry_dsn, sentry_events

REPO = Path(__file__).resolve().parents[2]

CANARY_WEBHOOK = "https://hooks.slack.test/services/T000/B000/canary-webhook-5f1e"
CANARY_TOKEN = "canary-token-8c2d41aa"
CANARY_DB_PASSWORD = "canary-dbpass-77e1"
CANARY_REGISTERED = "canary-registered-0b9e"
CANARY_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nCANARYPRIVATEKEYLINE0123456789\n-----END PRIVATE KEY-----\n"
)


def _env(tmp_path: Path, dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "SWEEPYARD_"))}
    env.update(
        SENTRY_DSN=dsn,
        SWEEPYARD_PIPELINE="sweep",
        SWEEPYARD_ATTEMPT="2",
        SWEEPYARD_IMAGE="ghcr.io/acme/sweepyard:abc123",
        SWEEPYARD_WORKFLOW_NAME="sweep-x7k2p",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


RAISES = """
    from components.runtime.alerts import init_alerts
    init_alerts("train", sweep_id="sweep-x7k2p", trial_id="{trial}")
    def step(batch):
        raise RuntimeError("loss is NaN at step 7")
    step(3)
"""


def test_unhandled_error_reaches_sentry_with_tags_before_exit(tmp_path: Path) -> None:
    with receiving(reply=b"{}") as sentry:
        proc = _run(RAISES.format(trial="a1b2c3d4e5f6"), _env(tmp_path, sentry_dsn(sentry)))
        # The process has exited: whatever Sentry got, it got before the exit.
        events = sentry_events(sentry)
    assert proc.returncode == 1
    assert "RuntimeError: loss is NaN at step 7" in proc.stderr  # the traceback still prints
    assert len(events) == 1, events
    event = events[0]
    assert event["tags"] == {
        "component": "train",
        "pipeline": "sweep",
        "sweep": "sweep-x7k2p",
        "trial": "a1b2c3d4e5f6",
        "attempt": "2",
        "image": "ghcr.io/acme/sweepyard:abc123",
        "workflow": "sweep-x7k2p",
    }
    exc = event["exception"]["values"][-1]
    assert exc["type"] == "RuntimeError"
    assert exc["value"] == "loss is NaN at step 7"
    assert exc["mechanism"]["handled"] is False
    assert event["fingerprint"] == ["{{ default }}", "trial:a1b2c3d4e5f6"]
    assert event["release"] == "abc123"


def test_same_error_groups_per_trial(tmp_path: Path) -> None:
    with receiving(reply=b"{}") as sentry:
        env = _env(tmp_path, sentry_dsn(sentry))
        for trial in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "aaaaaaaaaaaa"):
            assert _run(RAISES.format(trial=trial), env).returncode == 1
        events = sentry_events(sentry)
    prints = [tuple(e["fingerprint"]) for e in events]
    assert len(prints) == 3
    assert prints[0] == prints[2]  # a retry of the same trial: the same issue
    assert prints[0] != prints[1]  # another trial: another issue


def test_secrets_are_scrubbed_from_events(tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(
        json.dumps(
            {"type": "service_account", "private_key": CANARY_PRIVATE_KEY, "client_email": "x@y"}
        )
    )
    script = f"""
        import logging
        from components.runtime.alerts import init_alerts, register_secret
        init_alerts("notify", sweep_id="s1")
        register_secret({CANARY_REGISTERED!r})
        logging.basicConfig(level=logging.INFO)
        def post(url, headers, note):
            logging.getLogger("notify").info("posting to %s with %s", url, headers)
            raise ConnectionError(f"cannot reach {{url}} ({{note}}) " + "x" * 1100 + url)
        post(
            {CANARY_WEBHOOK!r},
            {{"Authorization": "Bearer {CANARY_TOKEN}"}},
            note="pw {CANARY_REGISTERED} key " + open({str(key_file)!r}).read(),
        )
    """
    with receiving(reply=b"{}") as sentry:
        env = _env(
            tmp_path,
            sentry_dsn(sentry),
            SLACK_WEBHOOK_URL=CANARY_WEBHOOK,
            HF_TOKEN=CANARY_TOKEN,
            DATABASE_URL=f"postgresql://mlflow:{CANARY_DB_PASSWORD}@db:5432/mlflow",
            GOOGLE_APPLICATION_CREDENTIALS=str(key_file),
        )
        proc = _run(script, env)
        raw = b"".join(decode_body(r) for r in sentry.requests).decode("utf-8", "replace")
        events = sentry_events(sentry)
    assert proc.returncode == 1
    assert len(events) == 1
    # The event did carry the error, frames and breadcrumbs, just not the secrets.
    assert "cannot reach [Filtered]" in events[0]["exception"]["values"][-1]["value"]
    assert any(
        c.get("message", "").startswith("posting to") for c in events[0]["breadcrumbs"]["values"]
    )
    for canary in (
        CANARY_WEBHOOK,
        "canary-webhook-5f1e",
        CANARY_TOKEN,
        CANARY_DB_PASSWORD,
        CANARY_REGISTERED,
        "CANARYPRIVATEKEYLINE",
    ):
        assert canary not in raw, canary
        assert canary not in proc.stderr, canary  # the printed traceback and the log, too
    assert "ConnectionError: cannot reach [Filtered]" in proc.stderr


def test_no_dsn_means_no_sentry(tmp_path: Path) -> None:
    with receiving(reply=b"{}") as sentry:
        env = _env(tmp_path, "")
        proc = _run(
            'from components.runtime.alerts import init_alerts\nprint(init_alerts("plan"))\nraise SystemExit(0)',
            env,
        )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "False"
    assert sentry.requests == []


def test_report_error_sends_a_handled_error_now(tmp_path: Path) -> None:
    script = """
        import sys
        from components.runtime.alerts import init_alerts, report_error
        init_alerts("train", sweep_id="s1", trial_id="t1t1t1t1t1t1")
        try:
            raise ValueError("bad --params: lr must be > 0")
        except ValueError as exc:
            print(report_error(exc))
        sys.exit(3)
    """
    with receiving(reply=b"{}") as sentry:
        proc = _run(script, _env(tmp_path, sentry_dsn(sentry)))
        events = sentry_events(sentry)
    assert proc.returncode == 3
    assert len(events) == 1
    assert events[0]["event_id"] == proc.stdout.strip()
    assert events[0]["exception"]["values"][-1]["mechanism"]["handled"] is True
    assert events[0]["tags"]["trial"] == "t1t1t1t1t1t1"


def test_secret_names_and_values() -> None:
    for name in (
        "SENTRY_DSN",
        "SLACK_WEBHOOK_URL",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
    ):
        assert alerts.is_secret_name(name), name
    for name in ("SWEEPYARD_SHARED", "MLFLOW_TRACKING_URI", "PATH", "SWEEPYARD_IMAGE"):
        assert not alerts.is_secret_name(name), name
    env = {
        "MLFLOW_TRACKING_URI": "https://user:s3cr3t-pass@mlflow.example/",
        "SLACK_WEBHOOK_URL": CANARY_WEBHOOK,
        "SOME_TOKEN": "1",  # too short to scrub by value
    }
    found = alerts.secret_values(env)
    assert {"s3cr3t-pass", CANARY_WEBHOOK} <= found
    assert "1" not in found


def test_scrub_replaces_values_keys_and_truncated_tails() -> None:
    secrets = [CANARY_WEBHOOK]
    data = {
        "msg": f"posting to {CANARY_WEBHOOK} failed",
        "vars": {"webhook_url": "anything", "api_key": "zzz", "steps": [1, 2]},
        "truncated": "x" * 10 + CANARY_WEBHOOK[:20] + "...",
    }
    clean = alerts.scrub(data, secrets)
    assert clean["msg"] == "posting to [Filtered] failed"
    assert clean["vars"] == {"webhook_url": "[Filtered]", "api_key": "[Filtered]", "steps": [1, 2]}
    assert clean["truncated"] == "x" * 10 + "[Filtered]..."
    assert alerts.strip_url_credentials("https://u:p@mlflow.example:8443/x?y=1") == (
        "https://mlflow.example:8443/x?y=1"
    )


def test_a_component_that_raises_reports_with_its_tags(tmp_path: Path) -> None:
    """The real compare entrypoint on a sweep whose plan is broken: the error reaches Sentry."""
    shared = tmp_path / "shared"
    (shared / "sweeps" / "sweep-broken").mkdir(parents=True)
    (shared / "sweeps" / "sweep-broken" / "plan.json").write_text('{"not": "a list"}')
    with receiving(reply=b"{}") as sentry:
        env = _env(tmp_path, sentry_dsn(sentry), SWEEPYARD_SHARED=str(shared))
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = subprocess.run(
            [sys.executable, "-m", "components.compare", "--sweep-id", "sweep-broken",
             "--objective", "val_loss", "--direction", "minimize", "--model-name", "m"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        events = sentry_events(sentry)
    assert proc.returncode == 1
    assert "plan.json: expected a JSON list of trials, got dict" in proc.stderr
    assert len(events) == 1
    assert events[0]["tags"] == {
        "component": "compare",
        "pipeline": "sweep",
        "sweep": "sweep-broken",
        "attempt": "2",
        "image": "ghcr.io/acme/sweepyard:abc123",
        "workflow": "sweep-x7k2p",
    }
    assert events[0]["exception"]["values"][-1]["type"] == "ValueError"

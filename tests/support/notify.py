"""Running the notify step against a loopback Slack webhook and reading the message it posted; the
notify, champion and pruned-results tests share it. No tests here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.receivers import Receiver

REPO = Path(__file__).resolve().parents[2]

WEBHOOK_PATH = "/services/T0001/B0001/notify-canary-3f9a"


def _env(shared: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENTRY_", "SWEEPYARD_", "SLACK_", "MLFLOW_", "ARGO_", "TENSORBOARD_"))
    }
    env.update(SWEEPYARD_SHARED=str(shared), PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def _notify(
    env: dict[str, str], status: str, sweep: str = "sweep-abc12"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.notify", "--sweep-id", sweep, "--status", status,
         "--workflow-name", sweep],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _payload(receiver: Receiver) -> dict[str, Any]:
    assert len(receiver.requests) == 1, receiver.requests
    req = receiver.requests[0]
    assert req.path == WEBHOOK_PATH
    assert req.headers.get("Content-Type", "").startswith("application/json")
    return dict(json.loads(req.body))


def _fields(payload: dict[str, Any]) -> dict[str, str]:
    """``*Name*\\nvalue`` fields of the section blocks, as {name: value}."""
    out = {}
    for block in payload["blocks"]:
        for field in block.get("fields", []):
            name, _, value = field["text"].partition("\n")
            out[name.strip("*")] = value
    return out

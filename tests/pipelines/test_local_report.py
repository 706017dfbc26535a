"""What the local summary and `make status` say about a step: its reason, its trial's record."""

from __future__ import annotations

import json
import time
from pathlib import Path

from components.runtime.trial import AttemptLog
from pipelines.backends.local.report import failure_reason, last_error_line, trial_record


def test_the_reason_is_the_logs_last_error_line_beside_argos_verdict(tmp_path: Path) -> None:
    log = tmp_path / "fetch-0.log"
    log.write_text(
        "2026-11-28 05:00:00 INFO fetch: listing gs://bucket/data\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "google.auth.exceptions.DefaultCredentialsError: no Google credentials found\n"
        "2026-11-28 05:00:01 INFO fetch: bye\n"
    )
    verdict = "Error (exit code 3); retryStrategy.expression evaluated to false"
    reason = failure_reason(verdict, [{"log": str(tmp_path / "gone.log")}, {"log": str(log)}])
    assert reason == (
        f"google.auth.exceptions.DefaultCredentialsError: no Google credentials found ({verdict})"
    )
    assert failure_reason(verdict, []) == verdict
    assert last_error_line(tmp_path / "missing.log") == ""


def test_a_trial_finished_by_an_earlier_run_is_skipped_with_its_own_preemptions(
    tmp_path: Path,
) -> None:
    first = AttemptLog(tmp_path / "attempts.jsonl", env={"SWEEPYARD_ATTEMPT": "0"})
    first.start()  # killed: no end record
    second = AttemptLog(tmp_path / "attempts.jsonl", env={"SWEEPYARD_ATTEMPT": "1"})
    second.start()
    second.end("done", 0)
    result = {"status": "done", "preemptions": 1, "params": {"lr": 0.1}}
    (tmp_path / "result.json").write_text(
        json.dumps({**result, "finished_at": "2020-01-01T00:00:00Z"})
    )
    later = trial_record(tmp_path, run_started=time.time())
    assert later == {
        "preemptions": 1, "attempts": 2, "skipped": True, "params": {"lr": 0.1}, "redone": ""
    }  # fmt: skip
    same_run = trial_record(tmp_path, run_started=0.0)
    assert same_run["skipped"] is False
    assert trial_record(None, 0.0)["preemptions"] == 0

"""The local backend runs a multi-node trial's JobSet as a gang: every pod a local "node", a failed
pod restarts or fails the whole gang as the JobSet's failure policy says, a local preemption kills
one node (DisruptionTarget) and the gang restarts without spending ``maxRestarts``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipelines.backends.local import RunResult, run_workflow
from pipelines.backends.local.jobset_policy import JobFailure, failure_action

MANIFEST = Path(__file__).parents[1] / "manifests" / "local" / "jobset.yaml"

# each pod appends one line per launch to $SCRATCH/launches and reports its env and argv
REPORT = (
    "import json, os, sys, time; s = os.environ['SCRATCH']; "
    "i = os.environ['JOB_COMPLETION_INDEX']; "
    "n = len(open(s + '/launches').read().splitlines()) if os.path.exists(s + '/launches') else 0; "
    "open(s + '/launches', 'a').write(i + chr(10)); "
    "json.dump({'env': {k: os.environ[k] for k in ('SWEEPYARD_MASTER_ADDR', "
    "'SWEEPYARD_MASTER_PORT', 'JOB_COMPLETION_INDEX', 'HOSTNAME')}, 'argv': sys.argv[1:]}, "
    "open(s + '/pod-' + i + '.json', 'w')); "
)


def run(tmp_path: Path, program: str, **kwargs: Any) -> RunResult:
    kwargs.setdefault("progress", False)
    return run_workflow(
        yaml.safe_load(MANIFEST.read_text()),
        run_dir=tmp_path / "run",
        shared_root=tmp_path / "shared",
        cwd=tmp_path,
        parameters={"program": REPORT + program},
        **kwargs,
    )


def launches(tmp_path: Path) -> list[str]:
    return (tmp_path / "shared" / "scratch" / "launches").read_text().split()


def test_a_gang_whose_pods_all_succeed_completes_once(tmp_path: Path) -> None:
    result = run(tmp_path, "sys.exit(0)")

    trial = result.nodes["trial"]
    assert result.status == "Succeeded", trial.message
    assert sorted(launches(tmp_path)) == ["0", "1"]
    pods = [
        json.loads((tmp_path / "shared" / "scratch" / f"pod-{i}.json").read_text()) for i in "01"
    ]
    # the pods' DNS names resolve to this machine, one free rendezvous port for the gang
    assert {p["env"]["SWEEPYARD_MASTER_ADDR"] for p in pods} == {"127.0.0.1"}
    ports = {p["env"]["SWEEPYARD_MASTER_PORT"] for p in pods}
    assert len(ports) == 1 and ports != {"29500"}
    assert [p["env"]["JOB_COMPLETION_INDEX"] for p in pods] == ["0", "1"]
    assert pods[1]["env"]["HOSTNAME"] == f"{result.name}-abc123-node-0-1"
    # the params reach the pod intact through toJson, quotes and all
    assert json.loads(pods[0]["argv"][0]) == {"lr": 0.1, "note": 'it\'s "quoted"'}
    assert len(trial.attempts) == 1 and trial.attempts[0].phase == "Succeeded"


def test_exit_3_on_one_node_fails_the_jobset_without_a_restart(tmp_path: Path) -> None:
    result = run(tmp_path, "time.sleep(30) if i == '0' else sys.exit(3)")

    trial = result.nodes["trial"]
    assert result.status == "Failed"
    assert "rule GiveUp" in trial.message and "exit code 3" in trial.message, trial.message
    assert len(trial.attempts) == 1
    assert result.wall_seconds < 20  # the other node was deleted, not waited for


def test_an_application_error_restarts_the_gang_until_max_restarts(tmp_path: Path) -> None:
    result = run(tmp_path, "sys.exit(1 if i == '1' else 0)")

    trial = result.nodes["trial"]
    assert result.status == "Failed"
    assert "maxRestarts reached" in trial.message and "BackoffLimitExceeded" in trial.message
    assert len(trial.attempts) == 2  # maxRestarts: 1 -> two launches of the whole gang
    assert sorted(launches(tmp_path)) == ["0", "0", "1", "1"]


def test_a_failure_then_success_is_one_counted_restart(tmp_path: Path) -> None:
    result = run(tmp_path, "sys.exit(1 if n < 2 and i == '0' else 0)")

    assert result.status == "Succeeded", result.nodes["trial"].message
    assert len(result.nodes["trial"].attempts) == 2


def test_a_preempted_node_restarts_the_gang_without_spending_max_restarts(tmp_path: Path) -> None:
    # the first two launches outlive the preemption (0.5..4.5 s in); later ones end at once
    program = "time.sleep(30) if n < 4 else sys.exit(0)"
    result = run(tmp_path, program, chaos=1.0, chaos_window=5.0, seed=1)

    trial = result.nodes["trial"]
    assert result.status == "Succeeded", trial.message
    assert len(trial.attempts) == 3  # two preemptions (maxRestarts is 1), then done
    assert [a.preempted for a in trial.attempts] == [True, True, False]
    assert "DisruptionTarget" in trial.attempts[0].message
    assert "RestartJobSetAndIgnoreMaxRestarts" in trial.attempts[0].message
    assert trial.preemptions == 2


def test_failure_policy_rules_follow_jobset() -> None:
    text = MANIFEST.read_text().split("manifest: |")[1]
    jobset = yaml.safe_load(re.sub(r"\{\{.*?\}\}", "TAG", text).replace("\n          ", "\n"))
    policy = jobset["spec"]["failurePolicy"]
    pod: Any = None

    def action(reason: str, message: str) -> tuple[str, str]:
        return failure_action(policy, JobFailure(reason, message, pod))

    lost = "Pod ns/x has condition DisruptionTarget matching FailJob rule at index 0"
    assert action("PodFailurePolicy", lost) == ("RestartJobSetAndIgnoreMaxRestarts", "Preempted")
    code3 = "Container train for pod ns/x failed with exit code 3 matching FailJob rule at index 1"
    assert action("PodFailurePolicy", code3) == ("FailJobSet", "GiveUp")
    code143 = code3.replace("exit code 3 ", "exit code 143 ")
    assert action("PodFailurePolicy", code143) == ("RestartJobSetAndIgnoreMaxRestarts", "Preempted")
    other = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert action(*other) == ("RestartJobSet", "")
    assert failure_action(None, JobFailure(*other, pod)) == ("FailJobSet", "")

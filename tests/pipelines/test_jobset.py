"""Trials bigger than one GPU: the multi-node trial as a JobSet (validated against JobSet's pinned
CRD, with the disruption policy), the single-node N-GPU trial under torchrun, the config's checks,
KFP's refusal, and the CRD validator itself (it rejects what the API server would)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.contract import EXIT_GIVE_UP
from pipelines.backends.local.jobset_policy import JobFailure, failure_action
from pipelines.build import jobset
from pipelines.build.argo import build
from pipelines.config import ConfigError, load_config, parse_config
from pipelines.validate import validate_document
from pipelines.validate.crds import object_problems, parse_manifest

REPO = Path(__file__).resolve().parents[2]
COMPILED = REPO / "pipelines" / "compiled"


def templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return yaml.safe_load((COMPILED / "charlm-ddp.yaml").read_text())


@pytest.fixture(scope="module")
def train(golden: dict[str, Any]) -> dict[str, Any]:
    return templates(golden)["train"]


@pytest.fixture(scope="module")
def js(train: dict[str, Any]) -> dict[str, Any]:
    return parse_manifest(train["resource"]["manifest"])  # type: ignore[no-any-return]


def pod_of(js: dict[str, Any]) -> dict[str, Any]:
    [rjob] = js["spec"]["replicatedJobs"]
    return rjob["template"]["spec"]["template"]  # type: ignore[no-any-return]


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


def test_golden_is_what_the_config_compiles_to(golden: dict[str, Any]) -> None:
    assert build(load_config("charlm-ddp")).to_dict() == golden
    assert validate_document(golden) == []


def test_multi_node_trial_is_a_resource_template_creating_a_jobset(
    train: dict[str, Any], js: dict[str, Any]
) -> None:
    assert "container" not in train and "retryStrategy" not in train, "the JobSet owns retries"
    res = train["resource"]
    assert res["action"] == "create" and res["setOwnerReference"] is True
    assert res["successCondition"] == "status.terminalState == Completed"
    assert res["failureCondition"] == "status.terminalState == Failed"
    assert [p["name"] for p in train["inputs"]["parameters"]] == [
        "trial-id",
        "params",
        "data-path",
        "data-hash",
    ]
    assert (js["apiVersion"], js["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    assert js["metadata"]["name"] == "{{workflow.name}}-{{inputs.parameters.trial-id}}"
    assert object_problems(js) == [], "valid against JobSet v0.12.0's CRD"


def test_jobset_carries_the_disruption_policy_and_the_queue(js: dict[str, Any]) -> None:
    cfg = load_config("charlm-ddp")
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "sweepyard-spot"
    assert js["metadata"]["labels"]["sweepyard.io/pipeline"] == "charlm-ddp"
    policy = js["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == cfg.retries.app_errors
    preempted, give_up = policy["rules"]
    assert (preempted["name"], preempted["action"]) == (
        "Preempted",
        "RestartJobSetAndIgnoreMaxRestarts",
    )
    assert (give_up["name"], give_up["action"]) == ("GiveUp", "FailJobSet")
    for rule in (preempted, give_up):
        assert rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    [rjob] = js["spec"]["replicatedJobs"]
    assert (rjob["name"], rjob["replicas"]) == ("node", 1)
    job = rjob["template"]["spec"]
    assert (job["parallelism"], job["completions"], job["completionMode"]) == (2, 2, "Indexed")
    assert job["backoffLimit"] == 0
    code_rule = {"containerName": "train", "operator": "In"}
    assert job["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {**code_rule, "values": [EXIT_GIVE_UP]}},
        {"action": "FailJob", "onExitCodes": {**code_rule, "values": [143]}},
    ]
    # The patterns match what the Job controller writes on the Job's Failed condition
    # (kubernetes pkg/controller/job/pod_failure_policy.go) for each rule -- and not the others;
    # JobSet's first matching rule decides (the local backend's reading of it, which runs it here).
    pod = "sweepyard/x-abc-node-0-1-q7z2k"
    disrupted = f"Pod {pod} has condition DisruptionTarget matching FailJob rule at index 0"
    gave_up = f"Container train for pod {pod} failed with exit code 3 matching FailJob rule at index 1"  # fmt: skip
    stopped = gave_up.replace("exit code 3", "exit code 143").replace("index 1", "index 2")
    crashed = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def action(reason: str, message: str) -> str:
        return failure_action(policy, JobFailure(reason, message, None))[0]  # type: ignore[arg-type]

    assert action("PodFailurePolicy", disrupted) == "RestartJobSetAndIgnoreMaxRestarts"
    assert action("PodFailurePolicy", stopped) == "RestartJobSetAndIgnoreMaxRestarts"
    assert action("PodFailurePolicy", gave_up) == "FailJobSet"
    assert action(*crashed) == "RestartJobSet"  # counted: an application error
    assert action("PodFailurePolicy", gave_up.replace("exit code 3", "exit code 33")) == (
        "RestartJobSet"
    )


def test_jobset_pod_is_the_train_step_on_every_node(js: dict[str, Any]) -> None:
    pod = pod_of(js)
    spec = pod["spec"]
    [c] = spec["containers"]
    assert c["name"] == "train" and spec["restartPolicy"] == "Never"
    args = c["args"]
    assert args[args.index("--nnodes") + 1] == "2"
    assert args[args.index("--nproc-per-node") + 1] == "2"
    assert args[args.index("--params") + 1] == jobset.PARAMS_TAG
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert not any(a.startswith("--node-rank") for a in args), "the rank comes from the env"
    env = {e["name"]: e for e in c["env"]}
    assert env["SWEEPYARD_MASTER_ADDR"]["value"] == (
        "{{workflow.name}}-{{inputs.parameters.trial-id}}-node-0-0."
        "{{workflow.name}}-{{inputs.parameters.trial-id}}"
    )
    assert env["SWEEPYARD_MASTER_PORT"]["value"] == "29500"
    assert "{{retries}}" not in str(env), "no Argo retries here: JobSet's restart counter instead"
    assert env["SWEEPYARD_ATTEMPT"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['jobset.sigs.k8s.io/restart-attempt']"
    )
    for name in ("SENTRY_DSN", "MLFLOW_TRACKING_TOKEN"):  # secrets only by reference
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"], name
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["serviceAccountName"] == "sweepyard-workflow"
    assert spec["terminationGracePeriodSeconds"] == 15
    assert spec["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == ["sweepyard-shared"]
    assert pod["metadata"]["labels"]["sweepyard.io/trial"] == "{{inputs.parameters.trial-id}}"


def test_params_reach_the_manifest_as_a_json_string_once_argo_substitutes(
    train: dict[str, Any],
) -> None:
    """Argo's toJson turns the params into a JSON string literal: the manifest stays YAML."""
    text = train["resource"]["manifest"]
    assert "{{inputs.parameters.params}}" not in text
    params = '{"d_model": 64, "lr": 0.001, "note": "it\'s \\"quoted\\""}'
    import json

    substituted = text.replace(jobset.PARAMS_TAG, json.dumps(params))
    doc = yaml.safe_load(substituted)
    args = pod_of(doc)["spec"]["containers"][0]["args"]
    assert args[args.index("--params") + 1] == params


def test_single_node_multi_gpu_trial_runs_torchrun_in_one_container_step() -> None:
    cfg_raw = raw("charlm")
    cfg_raw["resources"]["gpu"]["count"] = 4
    cfg_raw["cluster"]["queue"] = "sweepyard-spot"
    train = templates(build(parse_config(cfg_raw)).to_dict())["train"]
    args = train["container"]["args"]
    assert args[args.index("--nproc-per-node") + 1] == "4"
    assert "--nnodes" not in args
    assert train["container"]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert train["metadata"]["labels"] == {"kueue.x-k8s.io/queue-name": "sweepyard-spot"}
    assert "retryStrategy" in train, "one pod: Argo retries it as before"
    # one GPU, no queue: the step is as it always was
    plain = templates(build(load_config("charlm")).to_dict())["train"]
    assert "--nproc-per-node" not in plain["container"]["args"]
    assert "metadata" not in plain or "labels" not in plain["metadata"]


def test_config_nodes_and_queue_are_checked_naming_the_key() -> None:
    base = raw("charlm-ddp")
    for key, value, path in (
        ("nodes", 0, "resources.nodes"),
        ("nodes", 65, "resources.nodes"),
    ):
        bad = copy.deepcopy(base)
        bad["resources"][key] = value
        with pytest.raises(ConfigError) as e:
            parse_config(bad)
        assert [p for p, _ in e.value.problems] == [path]
    bad = copy.deepcopy(base)
    bad["cluster"]["queue"] = "Not_A_Label"
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    assert [p for p, _ in e.value.problems] == ["cluster.queue"]
    long = copy.deepcopy(base)
    long["name"] = "a-rather-long-pipeline-name-xyz"  # 31 > 28: the JobSet's name would not fit
    with pytest.raises(ConfigError) as e:
        parse_config(long)
    [(path, message)] = e.value.problems
    assert path == "name" and "at most 28 characters" in message and "JobSet" in message
    long["resources"]["nodes"] = 1  # one node: no JobSet, no limit
    assert parse_config(long).resources.nodes == 1


def test_kfp_refuses_a_multi_node_trial_and_compile_skips_it(tmp_path: Path) -> None:
    from pipelines.build.kfp import KfpUnsupported, compile_package

    with pytest.raises(KfpUnsupported) as e:
        compile_package(load_config("charlm-ddp"), tmp_path / "x.kfp.yaml")
    assert e.value.problems[0][0] == "resources.nodes"
    assert "KFP cannot run a multi-node trial" in str(e.value)
    assert not (tmp_path / "x.kfp.yaml").exists()
    assert not (COMPILED / "charlm-ddp.kfp.yaml").exists()


def _broken(js: dict[str, Any], change: Any) -> list[str]:
    bad = copy.deepcopy(js)
    change(bad)
    return [str(p) for p in object_problems(bad)]


def test_a_broken_jobset_is_rejected_naming_the_path(js: dict[str, Any]) -> None:
    job = "spec.replicatedJobs[0].template.spec"

    def unknown(d: dict[str, Any]) -> None:
        d["spec"]["replicatedJobs"][0]["template"]["spec"]["backofLimit"] = 0

    def enum(d: dict[str, Any]) -> None:
        d["spec"]["failurePolicy"]["rules"][0]["action"] = "RestartJobSetIgnoringMaxRestarts"

    def not_int(d: dict[str, Any]) -> None:
        d["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] = (
            "{{inputs.parameters.n}}"
        )

    def container_field(d: dict[str, Any]) -> None:
        pod_of(d)["spec"]["containers"][0]["imagePullPolice"] = "Always"

    [p] = _broken(js, unknown)
    assert p.startswith(f"{job}.backofLimit: unknown field 'backofLimit'") and "backoffLimit" in p
    [p] = _broken(js, enum)
    assert (
        p.startswith("spec.failurePolicy.rules[0].action:")
        and "RestartJobSetAndIgnoreMaxRestarts" in p
    )
    [p] = _broken(js, not_int)
    assert p.startswith(f"{job}.parallelism: expected integer, got string")
    [p] = _broken(js, container_field)
    assert p.startswith(f"{job}.template.spec.containers[0].imagePullPolice: unknown field")
    wrong_version = {**js, "apiVersion": "jobset.x-k8s.io/v1"}
    [p] = [str(x) for x in object_problems(wrong_version)]
    assert p.startswith("apiVersion:") and "not served" in p


def test_the_workflow_validator_checks_the_jobset_inside_the_manifest(
    golden: dict[str, Any],
) -> None:
    bad = copy.deepcopy(golden)
    i = next(i for i, t in enumerate(bad["spec"]["templates"]) if t["name"] == "train")
    res = bad["spec"]["templates"][i]["resource"]
    res["manifest"] = res["manifest"].replace("completionMode: Indexed", "completionMod: Indexed")
    problems = [str(p) for p in validate_document(bad)]
    prefix = (
        f"spec.templates[{i}].resource.manifest.spec.replicatedJobs[0].template.spec.completionMod:"
    )
    assert len(problems) == 1 and problems[0].startswith(prefix), problems

"""Structural invariants of the compiled sweep, beside the golden-file check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.build.argo import build, build_cron
from pipelines.cli import COMPILED, dump_yaml, manifests
from pipelines.config import load_config, parse_config
from tests.support.sweep_compiled import templates

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wf() -> dict[str, Any]:
    return yaml.safe_load((COMPILED / "sweep.yaml").read_text())


def dag_tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    main = next(t for t in spec["templates"] if t["name"] == spec["entrypoint"])
    return {t["name"]: t for t in main["dag"]["tasks"]}


def test_golden_files_match_what_the_code_builds() -> None:
    for name, doc in manifests(load_config("sweep")).items():
        assert (COMPILED / name).read_text() == dump_yaml(doc), (
            f"{name} is stale: run `make compile`"
        )


def test_build_is_deterministic() -> None:
    cfg = load_config("sweep")
    assert dump_yaml(build(cfg).to_dict()) == dump_yaml(build(cfg).to_dict())
    assert dump_yaml(build_cron(cfg).to_dict()) == dump_yaml(build_cron(cfg).to_dict())


def test_gpu_is_requested_by_train_only(wf: dict[str, Any]) -> None:
    for name, t in templates(wf).items():
        res = json.dumps(t.get("container", {}).get("resources", {}))
        if name == "train":
            assert t["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
            assert t["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in t[
                "tolerations"
            ]
        else:
            assert "nvidia.com/gpu" not in res, name
            assert "nodeSelector" not in t and "tolerations" not in t, name


def test_train_runs_on_spot_nodes_with_shm_and_a_short_grace(wf: dict[str, Any]) -> None:
    train = templates(wf)["train"]
    assert train["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert {
        "key": "cloud.google.com/gke-spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in train["tolerations"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in [
        {k: m[k] for k in ("name", "mountPath")} for m in train["container"]["volumeMounts"]
    ]
    assert (
        next(v for v in train["volumes"] if v["name"] == "dshm")["emptyDir"]["medium"] == "Memory"
    )
    assert 0 < json.loads(train["podSpecPatch"])["terminationGracePeriodSeconds"] <= 15


def test_the_claim_is_mounted_at_the_shared_root_wherever_data_is_read(wf: dict[str, Any]) -> None:
    cfg = load_config("sweep")
    claim = next(v for v in wf["spec"]["volumes"] if v["name"] == "shared")
    assert claim["persistentVolumeClaim"]["claimName"] == cfg.cluster.claim
    for name in ("plan", "fetch", "train", "compare", "notify"):
        c = templates(wf)[name]["container"]
        assert {"name": "shared", "mountPath": cfg.cluster.mount_path} in c["volumeMounts"], name
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SWEEPYARD_SHARED"] == cfg.cluster.mount_path, name


def test_plan_then_fetch_then_fanned_out_train_then_compare(wf: dict[str, Any]) -> None:
    tasks = dag_tasks(wf)
    assert tasks["fetch"]["depends"] == "plan"
    assert set(re.findall(r"[a-z]+", tasks["train"]["depends"])) == {"plan", "fetch"}
    assert tasks["train"]["withParam"] == "{{tasks.plan.outputs.parameters.trials}}"
    args = {p["name"]: p["value"] for p in tasks["train"]["arguments"]["parameters"]}
    assert args["data-path"] == "{{tasks.fetch.outputs.parameters.path}}"
    assert "train" in tasks["compare"]["depends"]
    # compare also runs when every trial failed, to report it
    assert "AllFailed" in tasks["compare"]["depends"]


def test_notify_is_the_exit_handler_so_it_runs_on_failure(wf: dict[str, Any]) -> None:
    assert wf["spec"]["onExit"] == "notify"
    notify = templates(wf)["notify"]
    assert "when" not in notify
    assert "{{workflow.status}}" in notify["container"]["args"]
    assert "notify" not in dag_tasks(wf)


def test_train_retry_strategy_follows_the_exit_code_contract(wf: dict[str, Any]) -> None:
    cfg = load_config("sweep")
    rs = templates(wf)["train"]["retryStrategy"]
    assert rs["retryPolicy"] == "Always"
    assert int(rs["limit"]) == cfg.retries.preemptions + cfg.retries.app_errors
    assert "asInt(lastRetry.exitCode) != 3" in rs["expression"]
    assert rs["backoff"]["duration"] == cfg.retries.backoff.duration
    assert rs["affinity"] == {"nodeAntiAffinity": {}}
    assert {"name": "SWEEPYARD_ATTEMPT", "value": "{{retries}}"} in templates(wf)["train"][
        "container"
    ]["env"]


def test_workflow_limits_and_cleanup(wf: dict[str, Any]) -> None:
    spec = wf["spec"]
    cfg = load_config("sweep")
    assert spec["parallelism"] == cfg.parallelism
    assert spec["podGC"]["strategy"] == "OnPodSuccess"
    assert spec["ttlStrategy"]["secondsAfterCompletion"] > 0
    assert spec["activeDeadlineSeconds"] == cfg.cluster.active_deadline_seconds
    assert wf["metadata"]["generateName"] == "sweep-" and "name" not in wf["metadata"]


def test_cron_workflow_has_five_field_schedule_and_forbids_overlap() -> None:
    cron = yaml.safe_load((COMPILED / "sweep-cron.yaml").read_text())
    assert cron["kind"] == "CronWorkflow"
    assert cron["spec"]["schedules"] == ["0 3 * * *"]
    assert len(cron["spec"]["schedules"][0].split()) == 5
    assert cron["spec"]["timezone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    assert set(templates(cron)) == set(
        templates(yaml.safe_load((COMPILED / "sweep.yaml").read_text()))
    )


def test_cpu_only_config_requests_no_gpu_and_no_spot_when_off() -> None:
    raw = yaml.safe_load((REPO / "pipelines" / "sweep.yaml").read_text())
    raw["resources"] = {"gpu": {"count": 0}, "spot": False}
    train = templates(build(parse_config(raw)).to_dict())["train"]
    assert "nvidia.com/gpu" not in json.dumps(train)
    assert "nodeSelector" not in train and "tolerations" not in train


def test_the_trial_runs_the_configured_trainer_in_the_trainer_image(wf: dict[str, Any]) -> None:
    for t in templates(wf).values():
        if "container" in t:
            assert (
                t["container"]["image"] == "us-docker.pkg.dev/sweepyard/sweepyard/sweepyard:0.1.0"
            )
    train = templates(wf)["train"]["container"]
    assert train["command"] == ["python", "-m", "components.train"]
    args = train["args"]
    assert args[args.index("--trainer-function") + 1] == "components.trainers.digits:train"


def test_manifest_does_not_grow_with_the_number_of_trials() -> None:
    raw = yaml.safe_load((REPO / "pipelines" / "sweep.yaml").read_text())
    sizes = []
    for n in (10, 1000):
        raw["search"] = {
            "max_trials": 1000,
            "space": {
                "random": {
                    "n_trials": n,
                    "seed": 0,
                    "params": {"lr": {"loguniform": [1e-4, 1e-1]}},
                },
                "fixed": {"hidden": 32, "batch_size": 32, "steps": 100, "seed": 0},
            },
        }
        sizes.append(len(dump_yaml(build(parse_config(raw)).to_dict())))
    assert abs(sizes[1] - sizes[0]) / sizes[0] < 0.01


CANARIES = {
    "SENTRY_DSN": "https://canary-sentry-key-91f2@o1.ingest.example/7",
    "SLACK_WEBHOOK_URL": "https://hooks.example/services/CANARY-SLACK-5e1d",
    "SWEEPYARD_DB_PASSWORD": "canary-db-password-77aa",
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-c0de",
    "ARGO_TOKEN": "canary-argo-token-beef",
}


def test_no_secret_value_lands_in_the_compiled_manifests(tmp_path: Path) -> None:
    env = {**os.environ, **CANARIES}
    out = tmp_path / "compiled"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "compile", "--all", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        text = f.read_text()
        for name, value in CANARIES.items():
            assert value not in text, f"{name}'s value leaked into {f.name}"
    for name, t in templates(yaml.safe_load((out / "sweep.yaml").read_text())).items():
        for e in t.get("container", {}).get("env", []):
            if e["name"] in CANARIES:
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, e["name"])


def test_ui_links_for_the_slack_digest_reach_the_steps_when_configured() -> None:
    raw = yaml.safe_load((REPO / "pipelines" / "sweep.yaml").read_text())
    raw["tracking"]["ui_url"] = "https://mlflow.team.example"
    raw["tracking"]["tensorboard_url"] = "https://tb.team.example"
    raw["cluster"]["argo_ui_url"] = "https://argo.team.example"
    notify = templates(build(parse_config(raw)).to_dict())["notify"]
    env = {e["name"]: e.get("value") for e in notify["container"]["env"]}
    assert env["MLFLOW_UI_URL"] == "https://mlflow.team.example"
    assert env["TENSORBOARD_URL"] == "https://tb.team.example"
    assert env["ARGO_UI_URL"] == "https://argo.team.example"
    assert env["ARGO_NAMESPACE"] == raw["cluster"]["namespace"]
    default = templates(yaml.safe_load((COMPILED / "sweep.yaml").read_text()))["notify"]
    assert "ARGO_UI_URL" not in {e["name"] for e in default["container"]["env"]}


@pytest.mark.parametrize(
    "name", sorted(p.name for p in COMPILED.glob("*.yaml") if not p.name.endswith(".kfp.yaml"))
)
def test_every_pod_is_locked_down(name: str) -> None:
    """Non-root as the image's user, RuntimeDefault seccomp, read-only root, no capabilities:
    writable only the shared disk, an emptyDir at /tmp (and the trial's /dev/shm)."""
    doc = yaml.safe_load((COMPILED / name).read_text())
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    containers = [t for t in spec["templates"] if "container" in t]
    for t in spec["templates"]:  # a multi-node trial: the pod of the JobSet it creates
        if "resource" in t:
            pod = _jobset_pod(t)
            assert pod["spec"]["securityContext"] == spec["securityContext"], t["name"]
            containers.append({"name": t["name"], "container": pod["spec"]["containers"][0]})
    assert {t["name"] for t in containers} >= {"train", "compare", "notify"}
    for t in containers:
        c = t["container"]
        assert c["securityContext"] == {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }, t["name"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert mounts - {"/dev/shm"} == {spec_mount(doc), "/tmp"}, t["name"]


def _jobset_pod(template: dict[str, Any]) -> dict[str, Any]:
    from pipelines.validate.crds import parse_manifest

    jobset = parse_manifest(template["resource"]["manifest"])
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]  # type: ignore[no-any-return]


def spec_mount(doc: dict[str, Any]) -> str:
    train = templates(doc)["train"]
    container = train["container"] if "container" in train else _jobset_pod(train)["spec"]["containers"][0]  # fmt: skip
    env = {e["name"]: e.get("value") for e in container["env"]}
    return str(env["SWEEPYARD_SHARED"])


def test_pods_run_as_the_user_the_image_declares() -> None:
    from pipelines.build.steps import IMAGE_UID

    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    users = set(re.findall(r"^USER (\S+)", dockerfile, flags=re.M))
    assert users == {f"{IMAGE_UID}:{IMAGE_UID}"}

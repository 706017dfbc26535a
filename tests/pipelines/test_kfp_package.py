"""The KFP package: golden, deterministic, valid protobuf, and the same steps as the Argo manifest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.build import steps
from pipelines.build.argo import build as build_argo
from pipelines.build.kfp.tasks import NOTIFY_PRELUDE, STEP_PRELUDE, TRAIN_PRELUDE
from pipelines.cli import COMPILED
from pipelines.config import SweepConfig, load_config
from tests.support.kfp_package import compiled, container, tasks

CONFIGS = Path(__file__).parents[1] / "configs"
STEPS = ("plan", "fetch", "train", "compare", "notify")
TRIGGER = pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.TriggerStrategy


def k8s(platform: Any, step: str) -> Any:
    struct = platform.platforms["kubernetes"].deployment_spec.executors[f"exec-{step}"]
    return json_format.ParseDict(
        json_format.MessageToDict(struct), k8s_pb2.KubernetesExecutorConfig()
    )


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepConfig, str, Any, Any]:
    cfg = load_config("sweep")
    return (cfg, *compiled(cfg, tmp_path_factory.mktemp("kfp")))


def test_golden_package_is_current_and_deterministic(default: Any, tmp_path: Path) -> None:
    cfg, text, _, _ = default
    again, _, _ = compiled(cfg, tmp_path)
    assert again == text, "two compiles of one config differ"
    golden = COMPILED / "sweep.kfp.yaml"
    assert golden.read_text() == text, f"{golden} is stale: run `make compile`"


def test_package_round_trips_through_kfp_protobuf(default: Any) -> None:
    _, text, spec, platform = default
    pipeline_doc, platform_doc = yaml.safe_load_all(text)
    # Nothing is lost or unknown: the messages print back to the documents that were uploaded.
    assert json_format.MessageToDict(spec) == pipeline_doc
    assert json_format.MessageToDict(platform) == platform_doc
    assert spec.pipeline_info.name == "sweep"
    for step in STEPS:
        k8s(platform, step)  # each executor's config parses as KubernetesExecutorConfig


def test_shared_claim_secrets_and_labels_on_every_step(default: Any) -> None:
    _, _, spec, platform = default
    for step in STEPS:
        conf = k8s(platform, step)
        assert [(m.constant, m.mount_path) for m in conf.pvc_mount] == [
            ("sweepyard-shared", "/mnt/shared")
        ]
        assert dict(conf.pod_metadata.labels) == {
            "app.kubernetes.io/name": "sweepyard",
            "sweepyard.io/pipeline": "sweep",
        }
        (secrets,) = conf.secret_as_env
        assert secrets.secret_name == "sweepyard-secrets" and secrets.optional
        env = {k.env_var: k.secret_key for k in secrets.key_to_env}
        expected = {"SENTRY_DSN": "sentry-dsn", "MLFLOW_TRACKING_TOKEN": "mlflow-tracking-token"}
        if step == "notify":
            expected["SLACK_WEBHOOK_URL"] = "slack-webhook-url"
        assert env == expected
        # Secrets arrive only through the Secret reference, never as a plain env value.
        plain = {e["name"] for e in container(spec, step)["env"]}
        assert not plain & {*expected, "SWEEPYARD_DB_PASSWORD"}


def test_train_placement_accelerator_and_shm(default: Any) -> None:
    _, _, spec, platform = default
    conf = k8s(platform, "train")
    assert dict(conf.node_selector.labels) == {
        "cloud.google.com/gke-spot": "true",
        "cloud.google.com/gke-accelerator": "nvidia-l4",
    }
    tolerations = {(t.key, t.operator, t.value, t.effect) for t in conf.tolerations}
    assert tolerations == {
        ("cloud.google.com/gke-spot", "Equal", "true", "NoSchedule"),
        ("nvidia.com/gpu", "Exists", "", "NoSchedule"),
    }
    [shm] = [d for d in conf.empty_dir_mounts if d.mount_path == "/dev/shm"]
    assert (shm.medium, shm.size_limit) == ("Memory", "2Gi")
    res = container(spec, "train")["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert res["accelerator"]["resourceCount"] == "1"
    assert res["resourceCpuRequest"] == "4"
    assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == "16Gi"
    for step in ("plan", "fetch", "compare", "notify"):
        assert "resources" not in container(spec, step), f"{step} must not request a GPU"
        conf = k8s(platform, step)
        assert not conf.tolerations and not conf.node_selector.labels


def test_every_step_runs_non_root_with_a_writable_tmp(default: Any) -> None:
    _, _, _, platform = default
    for step in ("plan", "fetch", "train", "compare", "notify"):
        conf = k8s(platform, step)
        ctx = conf.security_context
        assert (ctx.run_as_user, ctx.run_as_group, ctx.run_as_non_root) == (10001, 10001, True)
        [tmp] = [d for d in conf.empty_dir_mounts if d.mount_path == "/tmp"]
        assert not tmp.medium, f"{step}: /tmp is a disk-backed emptyDir"


def test_retries_caching_fan_out_fan_in_and_exit_handler(default: Any) -> None:
    cfg, _, spec, _ = default
    t = tasks(spec)
    assert t["train"].retry_policy.max_retry_count == cfg.retries.limit == 22
    for step in ("plan", "fetch", "compare"):
        assert t[step].retry_policy.max_retry_count == 3
    for step in ("plan", "fetch", "train", "compare"):
        policy = t[step].retry_policy
        assert policy.backoff_duration.seconds == 15
        assert policy.backoff_factor == 2.0
        assert policy.backoff_max_duration.seconds == 600
    assert not t["notify"].HasField("retry_policy")
    for step in (*STEPS, "trials"):
        assert not t[step].caching_options.enable_cache, f"{step} must not be cached"
    # plan -> fetch -> trials (a nested pipeline: ParallelFor over its input) -> compare.
    assert list(t["fetch"].dependent_tasks) == ["plan"]
    assert sorted(t["trials"].dependent_tasks) == ["fetch", "plan"]
    fan_out = t["trials"].inputs.parameters
    assert fan_out["trials"].task_output_parameter.producer_task == "plan"
    assert fan_out["data_path"].task_output_parameter.output_parameter_key == "path"
    assert fan_out["data_hash"].task_output_parameter.output_parameter_key == "hash"
    loop = t["for-loop-1"]
    assert loop.task_info.name == "trial"
    assert loop.iterator_policy.parallelism_limit == cfg.parallelism == 4
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--trials"
    inner = spec.components["comp-trials"].dag.outputs.parameters["Output"]
    assert inner.value_from_parameter.producer_subtask == "for-loop-1"  # dsl.Collected
    fan_in = t["compare"].inputs.parameters["trials"].task_output_parameter
    assert (fan_in.producer_task, fan_in.output_parameter_key) == ("trials", "Output")
    assert t["compare"].trigger_policy.strategy == TRIGGER.ALL_UPSTREAM_TASKS_COMPLETED
    notify = spec.root.dag.tasks["notify"]
    assert notify.trigger_policy.strategy == TRIGGER.ALL_UPSTREAM_TASKS_COMPLETED
    assert notify.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"


def _to_argo(value: str, defaults: dict[str, Any]) -> str:
    names = {
        "sweep_id": "{{workflow.parameters.sweep-id}}",
        "trial_id": "{{inputs.parameters.trial-id}}",
        "params": "{{inputs.parameters.params}}",
        "data_path": "{{inputs.parameters.data-path}}",
        "data_hash": "{{inputs.parameters.data-hash}}",
        "status": "{{workflow.status}}",
    }

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return names[name] if name in names else str(defaults[name])

    value = re.sub(r"\{\{\$\.inputs\.parameters\['([a-z_]+)'\]\}\}", sub, value)
    return value.replace("{{$.pipeline_job_uuid}}", "{{workflow.name}}")


def test_same_image_commands_and_env_as_the_argo_manifest(default: Any) -> None:
    cfg, _, spec, _ = default
    params = json_format.MessageToDict(spec.root.input_definitions)["parameters"]
    defaults = {
        name: int(p["defaultValue"])
        if p["parameterType"] == "NUMBER_INTEGER"
        else p["defaultValue"]
        for name, p in params.items()
    }
    argo = {t["name"]: t for t in build_argo(cfg).to_dict()["spec"]["templates"]}
    for step in STEPS:
        kfp_c, argo_c = container(spec, step), argo[step]["container"]
        assert kfp_c["image"] == argo_c["image"] == cfg.image
        assert kfp_c["command"][:2] == ["sh", "-c"]
        assert kfp_c["command"][-3:] == argo_c["command"] == steps.command(step)
        kfp_args = list(kfp_c["args"])
        if step == "compare":  # KFP's executor input: where compare writes the run page's artifacts
            assert kfp_args[-2:] == ["--kfp-executor-input", "{{$}}"]
            kfp_args = kfp_args[:-2]
        assert [_to_argo(a, defaults) for a in kfp_args] == argo_c["args"], step
        argo_env = {e["name"]: e["value"] for e in argo_c["env"] if "value" in e}
        kfp_env = {e["name"]: e["value"] for e in kfp_c["env"]}
        assert kfp_env == {
            k: v
            for k, v in argo_env.items()
            if k not in {"SWEEPYARD_WORKFLOW_NAME", "SWEEPYARD_ATTEMPT"}
        }


def test_cpu_on_demand_sql_sweep(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "kfp_cpu_sql.yaml")
    _, spec, platform = compiled(cfg, tmp_path)
    conf = k8s(platform, "train")
    assert not conf.node_selector.labels and not conf.tolerations
    assert "accelerator" not in container(spec, "train")["resources"]
    fetch_secrets = {
        (k.env_var, s.optional) for s in k8s(platform, "fetch").secret_as_env for k in s.key_to_env
    }
    assert ("SWEEPYARD_DB_PASSWORD", False) in fetch_secrets
    assert "--query" in container(spec, "fetch")["args"]
    t = tasks(spec)
    assert t["train"].retry_policy.max_retry_count == 6
    assert t["train"].retry_policy.backoff_max_duration.seconds == 3600
    assert "postgresql://reader@db.example.com" in json.dumps(json_format.MessageToDict(spec))


# The sh preludes, run for real: what KFP's launcher (or kfp.local) would run.


def _run(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", prelude, *args], capture_output=True, text=True, check=False)


PRINT_ENV = (
    "import json, os, sys; print(json.dumps({'pid': os.getpid(), 'argv': sys.argv[1:], "
    "'name': os.environ.get('SWEEPYARD_WORKFLOW_NAME'), 'out': os.environ.get('SWEEPYARD_OUTPUTS')}))"
)


def test_step_prelude_points_outputs_at_kfp_folder_and_execs(tmp_path: Path) -> None:
    out = tmp_path / "task" / "trials"
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            STEP_PRELUDE,
            "run-uuid",
            str(out),
            sys.executable,
            "-c",
            PRINT_ENV,
            "--a",
            "b c",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = proc.communicate()
    seen = json.loads(stdout)
    assert seen["pid"] == proc.pid, "the component must replace the shell (SIGTERM reaches it)"
    assert seen == {
        "pid": proc.pid,
        "argv": ["--a", "b c"],
        "name": "run-uuid",
        "out": str(out.parent),
    }
    assert out.parent.is_dir()
    no_outputs = _run(STEP_PRELUDE, "run-uuid", "", sys.executable, "-c", PRINT_ENV)
    assert json.loads(no_outputs.stdout)["out"] is None


def test_train_prelude_records_the_trial_and_keeps_the_exit_code(tmp_path: Path) -> None:
    done = tmp_path / "outputs" / "done"
    ok = _run(TRAIN_PRELUDE, "run-uuid", str(done), "0123abcd4567", sys.executable, "-c", PRINT_ENV)
    assert ok.returncode == 0 and done.read_text() == "0123abcd4567"
    assert json.loads(ok.stdout)["name"] == "run-uuid"
    preempted = _run(
        TRAIN_PRELUDE, "u", str(done), "t", sys.executable, "-c", "raise SystemExit(143)"
    )
    assert preempted.returncode == 143


@pytest.mark.parametrize(
    ("final_status", "argo_status"),
    [
        (
            '{"state": "SUCCEEDED", "pipeline_task_name": "exit-handler-1", "error": {}}',
            "Succeeded",
        ),
        (
            '{"error":{},"pipelineJobResourceName":"sweep-x","pipelineTaskName":"exit-handler-1","state":"SUCCEEDED"}',
            "Succeeded",
        ),
        ('{"error":{"code":9,"message":"train failed"},"state":"FAILED"}', "Failed"),
        ('{"state": "CANCELLED"}', "Failed"),
        (
            '{"error":{"message":"saw \\"state\\": \\"SUCCEEDED\\" earlier"},"state":"FAILED"}',
            "Failed",
        ),
        ("not json", "Failed"),
    ],
)
def test_notify_prelude_translates_kfp_final_status(final_status: str, argo_status: str) -> None:
    args = ["--sweep-id", "", "--status", final_status, "--workflow-name", "run-uuid"]
    result = _run(NOTIFY_PRELUDE, "run-uuid", sys.executable, "-c", PRINT_ENV, *args)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == [
        "--sweep-id",
        "",
        "--status",
        argo_status,
        "--workflow-name",
        "run-uuid",
    ]
    assert seen["name"] == "run-uuid"

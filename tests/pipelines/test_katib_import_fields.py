"""A Katib Experiment written here, imported field by field: collectors, parameters, env and
references, GPUs, early stopping; every field that cannot map is refused by its path.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.config import parse_config
from tests.support.katib import COLLECTOR, CONTAINER, container, experiment, imported, refused


def test_the_inline_experiment_imports_with_args_appended_to_the_command() -> None:
    cfg, notes = imported(experiment())
    assert cfg["trainer"]["command"] == ["python3", "/app/train.py", "--lr={lr}"]
    assert cfg["search"]["objective"] == {"metric": "accuracy", "direction": "maximize"}
    assert cfg["description"] == "Imported from Katib Experiment team/inline"
    assert cfg["search"]["max_failed_trials"] == 1 and cfg["parallelism"] == 2


def test_stdout_collector_default_and_with_a_filter() -> None:
    cfg, _ = imported(experiment())
    assert cfg["trainer"]["collect"] == {"stdout": "name=value"}
    doc = experiment()
    regex = r"([\w|-]+)\s*:\s*((-?\d+)(\.\d+)?)"
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "StdOut"},
        "source": {"filter": {"metricsFormat": [regex]}},
    }
    cfg, _ = imported(doc)
    assert cfg["trainer"]["collect"] == {"stdout": [regex]}


def test_file_collector_path_moves_into_the_working_folder_with_the_command() -> None:
    doc = experiment()
    doc["spec"]["objective"]["additionalMetricNames"] = ["loss"]
    container(doc)["args"].append("--log-path=/var/log/katib/metrics.log")
    doc["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "File"}}  # Katib's default path
    cfg, notes = imported(doc)
    assert cfg["trainer"]["collect"] == {"file": {"path": "metrics.log", "format": "text"}}
    assert cfg["trainer"]["command"][-1] == "--log-path=metrics.log"
    assert cfg["trainer"]["metrics"] == ["accuracy", "loss"]
    assert any(n.startswith(f"{COLLECTOR}.source.fileSystemPath.path: /var/log/katib/metrics.log")
               for n in notes)  # fmt: skip


def test_file_collector_text_with_a_filter_and_json_lines() -> None:
    regex = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}"
    doc = experiment()
    container(doc)["args"].append("--log-path=/katib/mnist.log")
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "File"},
        "source": {"filter": {"metricsFormat": [regex]},
                   "fileSystemPath": {"path": "/katib/mnist.log", "kind": "File"}},
    }  # fmt: skip
    cfg, _ = imported(doc)
    assert cfg["trainer"]["collect"] == {
        "file": {"path": "mnist.log", "format": "text", "regex": [regex]}
    }
    doc = experiment()
    container(doc)["args"].append("--log-path=/katib/mnist.json")
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "File"},
        "source": {"fileSystemPath": {"path": "/katib/mnist.json", "kind": "File",
                                      "format": "JSON"}},
    }  # fmt: skip
    cfg, _ = imported(doc)
    assert cfg["trainer"]["collect"] == {"file": {"path": "mnist.json", "format": "jsonl"}}


def test_tensorflow_event_collector_folder_and_the_folder_above_it() -> None:
    doc = experiment()
    container(doc)["args"].append("--logdir=/tmp/tf")
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "TensorFlowEvent"},
        "source": {"fileSystemPath": {"path": "/tmp/tf", "kind": "Directory"}},
    }
    cfg, _ = imported(doc)
    assert cfg["trainer"]["collect"] == {"tensorboard": "tf"}
    assert cfg["trainer"]["command"][-1] == "--logdir=tf"
    # the program is given the folder above the collector's (Katib's tfjob-mnist-with-summaries)
    doc = experiment()
    container(doc)["args"].append("--log-path=/mnist-with-summaries-logs")
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "TensorFlowEvent"},
        "source": {"fileSystemPath": {"path": "/mnist-with-summaries-logs/test/",
                                      "kind": "Directory"}},
    }  # fmt: skip
    cfg, _ = imported(doc)
    assert cfg["trainer"]["collect"] == {"tensorboard": "mnist-with-summaries-logs/test"}
    assert cfg["trainer"]["command"][-1] == "--log-path=mnist-with-summaries-logs"


def test_a_param_that_is_not_an_identifier_is_renamed_with_a_note() -> None:
    doc = experiment()
    doc["spec"]["parameters"].append(
        {"name": "num-epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "5"}}
    )
    doc["spec"]["trialTemplate"]["trialParameters"].append(
        {"name": "epochs", "reference": "num-epochs"}
    )
    container(doc)["args"].append("--epochs=${trialParameters.epochs}")
    cfg, notes = imported(doc)
    assert cfg["trainer"]["params"] == ["lr", "num_epochs"]
    assert cfg["trainer"]["command"][-1] == "--epochs={num_epochs}"
    assert cfg["search"]["space"]["random"]["params"]["num_epochs"] == {"int": [1, 5]}
    assert any(
        n.startswith("spec.parameters[1].name: 'num-epochs' is the param 'num_epochs'")
        for n in notes
    )


def test_int_with_step_categorical_and_discrete() -> None:
    doc = experiment()
    doc["spec"]["parameters"] += [
        {"name": "width", "parameterType": "int",
         "feasibleSpace": {"min": "16", "max": "130", "step": "16"}},
        {"name": "optimizer", "parameterType": "categorical",
         "feasibleSpace": {"list": ["sgd", "adam"]}},
        {"name": "batch", "parameterType": "discrete",
         "feasibleSpace": {"list": ["32", "64", "0.5"]}},
    ]  # fmt: skip
    tps = doc["spec"]["trialTemplate"]["trialParameters"]
    for p in ("width", "optimizer", "batch"):
        tps.append({"name": p, "reference": p})
        container(doc)["args"].append(f"--{p}=${{trialParameters.{p}}}")
    cfg, notes = imported(doc)
    params = cfg["search"]["space"]["random"]["params"]
    assert params["width"] == {"int": [16, 128], "step": 16}  # 130 is off the step grid
    assert params["optimizer"] == {"choice": ["sgd", "adam"]}
    assert params["batch"] == {"choice": [32, 64, 0.5]}
    assert any(n.startswith("spec.parameters[1].feasibleSpace.max: 130 is 128") for n in notes)
    trials = parse_config(cfg).search.space.expand()
    assert all((t["width"] - 16) % 16 == 0 and 16 <= t["width"] <= 128 for t in trials)


def test_refusals_are_collected_and_all_named() -> None:
    doc = experiment()
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": "Custom", "customCollector": {"name": "c", "image": "x"}}
    }
    doc["spec"]["parameters"][0]["feasibleSpace"]["distribution"] = "normal"
    doc["spec"]["algorithm"]["algorithmName"] = "pbt"
    doc["spec"]["nosuchfield"] = 1
    problems = refused(doc)
    assert set(problems) == {
        f"{COLLECTOR}.collector.kind",
        "spec.parameters[0].feasibleSpace.distribution",
        "spec.algorithm.algorithmName",
        "spec.nosuchfield",
    }
    assert "Custom collector" in problems[f"{COLLECTOR}.collector.kind"]
    assert "normal" in problems["spec.parameters[0].feasibleSpace.distribution"]


def test_a_pytorchjob_trial_is_refused_as_multi_node() -> None:
    doc = experiment()
    job = doc["spec"]["trialTemplate"]["trialSpec"]
    doc["spec"]["trialTemplate"]["trialSpec"] = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "spec": {
            "pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": job["spec"]["template"]}}
        },
    }
    problems = refused(doc)
    assert list(problems) == ["spec.trialTemplate.trialSpec.kind"]
    assert (
        "multi-node trials are not supported yet" in problems["spec.trialTemplate.trialSpec.kind"]
    )


@pytest.mark.parametrize("kind", ["File", "TensorFlowEvent"])
def test_an_absolute_collector_path_the_command_never_names_is_refused(kind: str) -> None:
    doc = experiment()
    doc["spec"]["metricsCollectorSpec"] = {
        "collector": {"kind": kind},
        "source": {"fileSystemPath": {"path": "/katib/out",
                                      "kind": "File" if kind == "File" else "Directory"}},
    }  # fmt: skip
    problems = refused(doc)
    assert list(problems) == [f"{COLLECTOR}.source.fileSystemPath.path"]
    assert "not on its command line" in problems[f"{COLLECTOR}.source.fileSystemPath.path"]


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        (lambda d: d["spec"]["metricsCollectorSpec"].update(collector={"kind": "PrometheusMetric"}),
         f"{COLLECTOR}.collector.kind", "PrometheusMetric"),
        (lambda d: d["spec"]["metricsCollectorSpec"].update(collector={"kind": "Push"}),
         f"{COLLECTOR}.collector.kind", "Katib SDK"),
        (lambda d: d["spec"]["parameters"][0]["feasibleSpace"].update(distribution="logNormal"),
         "spec.parameters[0].feasibleSpace.distribution", "logNormal"),
        (lambda d: d["spec"].update(nasConfig={"graphConfig": {"numLayers": 8}}),
         "spec.nasConfig", "neural architecture search"),
        (lambda d: d["spec"]["trialTemplate"].update(configMap={"configMapName": "t"}),
         "spec.trialTemplate.configMap", "ConfigMap"),
        (lambda d: container(d).update(workingDir="/app"), f"{CONTAINER}.workingDir",
         "own working folder"),
        (lambda d: container(d)["args"].append("--out=$(OUT_DIR)"), f"{CONTAINER}.args[1]",
         "$(OUT_DIR)"),
        (lambda d: container(d)["args"].append("--fmt={epoch}"), f"{CONTAINER}.args[1]",
         "{epoch} would be read as a sweepyard placeholder"),
        (lambda d: container(d)["args"].append("${trialParameters.nope}"), f"{CONTAINER}.args[1]",
         "not in spec.trialTemplate.trialParameters"),
        (lambda d: container(d).update(env=[{"name": "K", "valueFrom": {"secretKeyRef": {}}}]),
         f"{CONTAINER}.env[0].valueFrom", "Secret"),
        (lambda d: d["spec"].pop("maxTrialCount"), "spec.maxTrialCount", "trial budget"),
        (lambda d: d["spec"].update(earlyStopping={"algorithmName": "medianstop"}),
         "spec.earlyStopping.algorithmName", "only in an adaptive search"),
        (lambda d: d["spec"]["algorithm"].update(algorithmName="tpe")
         or d["spec"]["parameters"][0].update(parameterType="categorical",
                                              feasibleSpace={"list": ["a", "b"]}),
         "spec.algorithm.algorithmName", "models double or int ranges"),
    ],
    ids=["prometheus", "push", "lognormal", "nas", "configmap", "workdir", "env-ref",
         "brace", "undeclared", "valuefrom", "no-budget", "median-on-random", "tpe-lists"],
)  # fmt: skip
def test_each_unmappable_field_is_refused_by_path(change: Any, field: str, why: str) -> None:
    doc = experiment()
    doc["spec"].setdefault("metricsCollectorSpec", {})
    change(doc)
    problems = refused(doc)
    assert field in problems, problems
    assert why in problems[field]


def test_env_with_values_runs_the_command_under_env_and_expands_refs() -> None:
    doc = experiment()
    container(doc)["env"] = [
        {"name": "OUT", "value": "results"},
        {"name": "LR", "value": "${trialParameters.learningRate}"},
    ]
    container(doc)["args"].append("--out=$(OUT) --cost=$$5")
    cfg, notes = imported(doc)
    assert cfg["trainer"]["command"] == [
        "env", "OUT=results", "LR={lr}", "python3", "/app/train.py", "--lr={lr}",
        "--out=results --cost=$5",
    ]  # fmt: skip
    assert any("env(1)" in n for n in notes)


def test_trial_metadata_references_map_to_the_trial_id_and_constants() -> None:
    doc = experiment()
    doc["spec"]["trialTemplate"]["trialParameters"] += [
        {"name": "trialName", "reference": "${trialSpec.Name}"},
        {"name": "trialKind", "reference": "${trialSpec.Kind}"},
    ]
    container(doc)["args"] += ["--run=${trialParameters.trialName}", "${trialParameters.trialKind}"]
    cfg, _ = imported(doc)
    assert cfg["trainer"]["command"][-2:] == ["--run={trial_id}", "Job"]


def test_gpus_and_the_accelerator_map_to_resources_and_backoff_to_app_errors() -> None:
    doc = experiment()
    pod = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["backoffLimit"] = 4
    container(doc)["resources"] = {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"nvidia.com/gpu": 2, "memory": "12Gi"},
    }
    cfg, _ = imported(doc)
    assert cfg["resources"] == {
        "gpu": {"count": 2, "type": "nvidia-tesla-a100"},
        "cpu": "2",
        "memory": "12Gi",
    }
    assert cfg["retries"] == {"app_errors": 4}


def test_medianstop_under_an_adaptive_algorithm_is_the_median_rule() -> None:
    doc = experiment()
    doc["spec"]["algorithm"]["algorithmName"] = "tpe"
    doc["spec"]["earlyStopping"] = {
        "algorithmName": "medianstop",
        "algorithmSettings": [{"name": "min_trials_required", "value": "2"},
                              {"name": "start_step", "value": "3"}],
    }  # fmt: skip
    cfg, notes = imported(doc)
    assert cfg["search"]["early_stopping"] == {"rule": "median", "warmup_steps": 3}
    assert any("min_trials_required=2 dropped" in n for n in notes)

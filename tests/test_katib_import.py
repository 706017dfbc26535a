"""``make import KATIB=experiment.yaml``: a Katib Experiment becomes a pipeline config that loads,
compiles to a valid Argo Workflow and KFP package, or is refused naming every Katib field that
cannot map. Katib's own examples are read from ../shared/katib (CI has it; a missing folder fails).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import manifests, validated
from pipelines.config import SweepConfig, load_config, parse_config
from pipelines.importers.katib import KatibImportError, convert, import_file, read_experiment

REPO = Path(__file__).resolve().parents[1]
KATIB = Path(__file__).resolve().parents[2] / "shared" / "katib"
HP_TUNING = sorted((KATIB / "hp-tuning").glob("*.yaml"))
# without the folder the parametrised test fails on this path (it must not become an empty skip)
EXAMPLES = HP_TUNING or [KATIB / "hp-tuning" / "missing.yaml"]
# Katib examples that cannot map, and the field each refusal names
REFUSED = {
    "simple-pbt.yaml": "spec.algorithm.algorithmName",
    "hyperopt-distribution.yaml": "spec.parameters[0].feasibleSpace.distribution",
    "grid.yaml": "spec.maxTrialCount",
}
CONTAINER = "spec.trialTemplate.trialSpec.spec.template.spec.containers[0]"
COLLECTOR = "spec.metricsCollectorSpec"


def test_katibs_reference_examples_are_there() -> None:
    """CI has ../shared/katib: without it the parametrised tests below would silently vanish."""
    assert (KATIB / "experiment-crd.yaml").is_file(), f"missing {KATIB}"
    names = {p.name for p in HP_TUNING}
    assert {"tpe.yaml", "random.yaml", "grid.yaml", "simple-pbt.yaml"} <= names, names
    assert set(REFUSED) <= names


def _compiles(cfg: SweepConfig, tmp_path: Path) -> None:
    from pipelines.build.kfp import compile_package

    docs = manifests(cfg)
    assert f"{cfg.name}.yaml" in docs
    for filename, doc in docs.items():
        validated(doc, filename)
    compile_package(cfg, tmp_path / "x.kfp.yaml")
    assert (tmp_path / "x.kfp.yaml").stat().st_size > 0


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_katib_example_imports_and_compiles_or_is_refused_by_field(
    path: Path, tmp_path: Path
) -> None:
    if path.name in REFUSED:
        with pytest.raises(KatibImportError) as err:
            import_file(path, tmp_path)
        assert REFUSED[path.name] in [field for field, _ in err.value.problems]
        assert list(tmp_path.iterdir()) == []  # nothing written
        return
    out = import_file(path, tmp_path)
    name = read_experiment(path)["metadata"]["name"]
    assert out == tmp_path / f"{name}.yaml"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    cfg = load_config(out)
    assert (
        cfg.trainer.command
        and cfg.trainer.image == "ghcr.io/kubeflow/katib/pytorch-mnist-cpu:latest"
    )
    _compiles(cfg, tmp_path)


def test_tpe_maps_exactly() -> None:
    cfg, notes = convert(read_experiment(KATIB / "hp-tuning" / "tpe.yaml"))
    default_image = yaml.safe_load((REPO / "pipelines" / "sweep.yaml").read_text())["image"]
    assert cfg == {
        "name": "tpe",
        "description": "Imported from Katib Experiment kubeflow/tpe",
        "image": default_image,
        "trainer": {
            "command": ["python3", "/opt/pytorch-mnist/mnist.py", "--epochs=1", "--batch-size=16",
                        "--lr={lr}", "--momentum={momentum}"],
            "image": "ghcr.io/kubeflow/katib/pytorch-mnist-cpu:latest",
            "params": ["lr", "momentum"],
            "metrics": ["loss"],
            "collect": {"stdout": "name=value"},
        },
        "search": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "algorithm": "tpe",
            "max_trials": 12,
            "max_failed_trials": 3,
            "space": {"random": {"params": {"lr": {"uniform": [0.01, 0.05]},
                                            "momentum": {"uniform": [0.5, 0.9]}}}},
        },
        "parallelism": 3,
        "resources": {"gpu": {"count": 0}},
        "tracking": {"model_name": "tpe"},
    }  # fmt: skip
    assert any(n.startswith("spec.objective.goal: 0.001 dropped") for n in notes)
    parsed = parse_config(cfg)
    assert parsed.search.adaptive and parsed.batch == 3 and parsed.data is None


def test_the_algorithms_map_to_their_sweepyard_samplers() -> None:
    expect = {
        "random.yaml": "random",
        "tpe.yaml": "tpe",
        "multivariate-tpe.yaml": "tpe",
        "cma-es.yaml": "cmaes",
        "bayesian-optimization.yaml": "gp",
        "sobol.yaml": "qmc",
        "hyperband.yaml": "tpe",
    }
    for name, algorithm in expect.items():
        cfg, _ = convert(read_experiment(KATIB / "hp-tuning" / name))
        assert cfg["search"]["algorithm"] == algorithm, name
    bo, _ = convert(read_experiment(KATIB / "hp-tuning" / "bayesian-optimization.yaml"))
    assert bo["search"]["seed"] == 10  # algorithmSettings random_state


def test_random_maps_its_budget_and_the_trial_containers_resources() -> None:
    cfg, _ = convert(read_experiment(KATIB / "hp-tuning" / "random.yaml"))
    assert cfg["search"]["space"]["random"]["n_trials"] == 12
    assert cfg["search"]["max_trials"] == 12 and cfg["search"]["algorithm"] == "random"
    assert cfg["resources"] == {"gpu": {"count": 0}, "cpu": "0.5", "memory": "1Gi"}


def test_optuna_distributions_map_to_int_log_and_stepped_ranges() -> None:
    cfg, _ = convert(read_experiment(KATIB / "hp-tuning" / "optuna-distribution.yaml"))
    assert cfg["search"]["space"]["random"]["params"] == {
        "lr": {"uniform": [1.0, 5.0], "step": 0.1},
        "momentum": {"loguniform": [0.001, 3.0]},
        "epochs": {"int": [1, 3]},
        "batch_size": {"int": [32, 64], "log": True},
    }
    assert cfg["trainer"]["command"][2:4] == ["--epochs={epochs}", "--batch-size={batch_size}"]


def test_hyperband_is_tpe_with_asha_and_a_fixed_resource() -> None:
    cfg, notes = convert(read_experiment(KATIB / "hp-tuning" / "hyperband.yaml"))
    search = cfg["search"]
    assert search["algorithm"] == "tpe"
    assert search["early_stopping"] == {"rule": "asha", "min_step": 1, "reduction_factor": 2}
    assert search["space"]["fixed"] == {"num_epochs": 2}  # r_l: each trial's full budget
    assert set(search["space"]["random"]["params"]) == {"lr", "momentum"}
    assert cfg["trainer"]["command"][2] == "--epochs={num_epochs}"
    assert cfg["trainer"]["params"] == ["lr", "momentum", "num_epochs"]
    assert any("'num-epochs' is the param 'num_epochs'" in n for n in notes)
    parse_config(cfg)


def test_a_grid_that_fits_its_budget_maps_to_exact_lists() -> None:
    doc = read_experiment(KATIB / "hp-tuning" / "grid.yaml")
    doc["spec"]["maxTrialCount"] = 45
    cfg, _ = convert(doc)
    assert cfg["search"]["algorithm"] == "grid" and cfg["search"]["max_trials"] == 45
    assert cfg["search"]["space"]["grid"] == {
        "lr": [0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05],
        "momentum": [0.5, 0.6, 0.7, 0.8, 0.9],
    }
    assert parse_config(cfg).search.space.size() == 45


# ---- Experiments written here -------------------------------------------------------------------


def experiment(name: str = "inline") -> dict[str, Any]:
    """A small Job-trial Experiment (random search over lr), to vary per test."""
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": 6,
            "maxFailedTrialCount": 1,
            "parameters": [
                {"name": "lr", "parameterType": "double",
                 "feasibleSpace": {"min": "0.01", "max": "0.1"}},
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "learningRate", "reference": "lr"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "main",
                            "image": "example.com/team/train:1",
                            "command": ["python3", "/app/train.py"],
                            "args": ["--lr=${trialParameters.learningRate}"],
                        }],
                    }}},
                },
            },
        },
    }  # fmt: skip


def container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    return spec["containers"][0]  # type: ignore[no-any-return]


def imported(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The converted config (checked as any config is) and the notes."""
    cfg, notes = convert(doc)
    parse_config(cfg, source="imported")
    return cfg, notes


def refused(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(KatibImportError) as err:
        convert(doc)
    return dict(err.value.problems)


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


# ---- files: what is read, what is written -------------------------------------------------------


def _write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def test_a_file_that_is_not_an_experiment_is_refused_and_nothing_written(tmp_path: Path) -> None:
    src = _write(tmp_path / "deploy.yaml", {"apiVersion": "apps/v1", "kind": "Deployment"})
    out = tmp_path / "out"
    with pytest.raises(KatibImportError) as err:
        import_file(src, out)
    assert err.value.problems[0][0] == "kind" and "Deployment" in err.value.problems[0][1]
    assert not out.exists()
    old = experiment()
    old["apiVersion"] = "kubeflow.org/v1alpha3"
    with pytest.raises(KatibImportError) as err:
        import_file(_write(tmp_path / "old.yaml", old), out)
    assert err.value.problems == [
        ("apiVersion", "expected kubeflow.org/v1beta1, got 'kubeflow.org/v1alpha3'")
    ]
    (tmp_path / "broken.yaml").write_text("spec: [\n")
    with pytest.raises(KatibImportError) as err:
        import_file(tmp_path / "broken.yaml", out)
    assert "not valid YAML" in err.value.problems[0][1]
    assert not out.exists()


def test_multi_document_files_need_exactly_one_experiment(tmp_path: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    src = _write(tmp_path / "both.yaml", config_map, experiment("multi"))
    assert import_file(src, tmp_path / "out") == tmp_path / "out" / "multi.yaml"
    two = _write(tmp_path / "two.yaml", experiment("a"), experiment("b"))
    with pytest.raises(KatibImportError) as err:
        import_file(two, tmp_path / "out2")
    assert "2 Experiments in one file (a, b)" in err.value.problems[0][1]
    assert not (tmp_path / "out2").exists()


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path) -> None:
    src = _write(tmp_path / "e.yaml", experiment("mine"))
    out = tmp_path / "pipelines"
    out.mkdir()
    (out / "mine.yaml").write_text("# someone's own pipeline\n")
    with pytest.raises(KatibImportError) as err:
        import_file(src, out)
    assert err.value.problems[0][0] == "metadata.name" and "--force" in err.value.problems[0][1]
    assert (out / "mine.yaml").read_text() == "# someone's own pipeline\n"
    assert sorted(p.name for p in out.iterdir()) == ["mine.yaml"]
    assert import_file(src, out, force=True) == out / "mine.yaml"
    assert load_config(out / "mine.yaml").trainer.image == "example.com/team/train:1"
    assert sorted(p.name for p in out.iterdir()) == ["mine.yaml"]


def test_the_written_file_carries_its_origin_and_notes(tmp_path: Path) -> None:
    doc = experiment("Noted_Name")
    doc["spec"]["objective"]["goal"] = 0.99
    notes: list[str] = []
    out = import_file(_write(tmp_path / "e.yaml", doc), tmp_path, notes=notes)
    assert out.name == "noted-name.yaml"
    text = out.read_text()
    assert text.startswith("# Imported from Katib Experiment team/Noted_Name (e.yaml)")
    assert "spec.objective.goal: 0.99 dropped" in text and any("goal" in n for n in notes)
    assert any(
        n.startswith("metadata.name: 'Noted_Name' is the pipeline 'noted-name'") for n in notes
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "import", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_prints_the_written_path_last(tmp_path: Path) -> None:
    src = KATIB / "hp-tuning" / "tpe.yaml"
    proc = _cli("--katib", str(src), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == str(tmp_path / "tpe.yaml")
    assert any(line.startswith("note: spec.objective.goal") for line in lines[:-1])
    assert load_config(tmp_path / "tpe.yaml").search.method == "tpe"
    again = _cli("--katib", str(src), "--out", str(tmp_path))
    assert again.returncode == 2 and "exists already" in again.stderr
    forced = _cli("--katib", str(src), "--out", str(tmp_path), "--force")
    assert forced.returncode == 0 and forced.stdout.strip().splitlines()[-1].endswith("tpe.yaml")


def test_the_cli_refuses_with_one_line_per_field_and_exit_2(tmp_path: Path) -> None:
    doc = experiment()
    doc["spec"]["metricsCollectorSpec"] = {"collector": {"kind": "Custom"}}
    doc["spec"]["trialTemplate"]["trialSpec"]["kind"] = "TFJob"
    src = _write(tmp_path / "bad.yaml", doc)
    out = tmp_path / "out"
    proc = _cli("--katib", str(src), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"error: cannot import {src}:"
    assert len(lines) == 3 and proc.stdout == "" and not out.exists()
    by_field = dict(line.split(": ", 1) for line in lines[1:])
    assert by_field.keys() == {
        f"  {COLLECTOR}.collector.kind",
        "  spec.trialTemplate.trialSpec.kind",
    }
    assert by_field[f"  {COLLECTOR}.collector.kind"].startswith("a Custom collector")
    assert (
        "multi-node trials are not supported yet" in by_field["  spec.trialTemplate.trialSpec.kind"]
    )


def test_the_pbt_example_is_refused_through_the_cli(tmp_path: Path) -> None:
    proc = _cli("--katib", str(KATIB / "hp-tuning" / "simple-pbt.yaml"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "  spec.algorithm.algorithmName: pbt: population based training" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_converting_does_not_change_the_experiment() -> None:
    doc = read_experiment(KATIB / "hp-tuning" / "hyperband.yaml")
    before = copy.deepcopy(doc)
    convert(doc)
    assert doc == before

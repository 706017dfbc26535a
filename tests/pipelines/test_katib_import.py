"""``make import KATIB=experiment.yaml``: a Katib Experiment becomes a pipeline config that loads,
compiles to a valid Argo Workflow and KFP package, or is refused naming every Katib field that
cannot map. Katib's own examples are read from ../shared/katib (CI has it; a missing folder fails).
An Experiment written here is imported field by field in test_katib_import_fields.py, the files and
the CLI in test_katib_import_files.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.cli import manifests, validated
from pipelines.config import SweepConfig, load_config, parse_config
from pipelines.importers.katib import KatibImportError, convert, import_file, read_experiment
from tests.support.katib import KATIB, REPO

HP_TUNING = sorted((KATIB / "hp-tuning").glob("*.yaml"))
# without the folder the parametrised test fails on this path (it must not become an empty skip)
EXAMPLES = HP_TUNING or [KATIB / "hp-tuning" / "missing.yaml"]
# Katib examples that cannot map, and the field each refusal names
REFUSED = {
    "simple-pbt.yaml": "spec.algorithm.algorithmName",
    "hyperopt-distribution.yaml": "spec.parameters[0].feasibleSpace.distribution",
    "grid.yaml": "spec.maxTrialCount",
}


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


def test_converting_does_not_change_the_experiment() -> None:
    doc = read_experiment(KATIB / "hp-tuning" / "hyperband.yaml")
    before = copy.deepcopy(doc)
    convert(doc)
    assert doc == before

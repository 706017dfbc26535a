"""The registry's ``champion`` alias moves only to a better model, against a real MLflow server.

Each sweep is hand-built (as plan + train leave it) with a known best value; compare registers its
best model only when it beats the version holding the alias, on the same objective, and says why
not otherwise, in the line it prints, the summary, ``make submit``'s report and the Slack digest.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import compare as compare_mod
from components import notify
from components.budget import Budget
from components.contract import trial_id
from components.summary import final_report
from pipelines.build import steps
from pipelines.config import SweepConfig, parse_config
from tests.support.compare import STEPS, make_sweep
from tests.support.notify import _fields

REPO = Path(__file__).resolve().parents[2]
BEST = (0.03, 128)  # the combo each sweep's `known` makes best
BEST_TRIAL = trial_id({"lr": 0.03, "hidden": 128, "batch_size": 32, "steps": STEPS})


def known(best_loss: float) -> dict[tuple[float, int], float]:
    """A sweep whose best trial ends at ``best_loss`` (val_accuracy = 1 - loss / 2)."""
    return {BEST: best_loss, (0.003, 32): 0.6, (0.03, 32): 0.5}


def run_sweep(
    tmp_path: Path,
    experiment: str,
    sweep_id: str,
    model_name: str,
    capsys: pytest.CaptureFixture[str],
    *,
    best_loss: float = 0.2,
    objective: str = "val_loss",
    direction: str = "minimize",
    max_failed_trials: int = 2,
    build: bool = True,
) -> tuple[int, dict[str, Any], list[str]]:
    """Build the sweep (unless resubmitted) and compare it: (exit code, summary, printed lines)."""
    shared = tmp_path / "shared"
    if build:
        make_sweep(shared, sweep_id, mlflow_experiment=experiment, known=known(best_loss))
    capsys.readouterr()
    code, summary = compare_mod.compare(
        sweep_id, objective=objective, direction=direction, model_name=model_name,
        shared=shared, outputs=tmp_path / "outputs" / sweep_id,
        budget=Budget(max_failed_trials=max_failed_trials),
    )  # fmt: skip
    return code, summary, capsys.readouterr().out.splitlines()


def registry(model_name: str) -> tuple[list[int], int | None]:
    """What a user sees in the registry: the versions, and the version the alias points at."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    versions = sorted(
        int(v.version) for v in client.search_model_versions(f"name = '{model_name}'")
    )
    try:
        champion = int(client.get_model_version_by_alias(model_name, "champion").version)
    except MlflowException:
        champion = None
    return versions, champion


def shown(tmp_path: Path, sweep_id: str, summary: dict[str, Any]) -> tuple[str, str]:
    """The model line of ``make submit``'s report and the digest's Model field."""
    report = final_report(tmp_path / "shared", sweep_id)
    assert report is not None
    lines = [line for line in report.splitlines() if "regist" in line or "model:" in line]
    message = notify.build_message(
        sweep_id=sweep_id, status="Succeeded", workflow_name=sweep_id, summary=summary, env={}
    )
    return lines[-1], _fields(message)["Model"]


def test_the_champion_moves_only_to_a_better_model(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"champ-{uuid.uuid4().hex[:6]}"

    # The first sweep: no registered model yet, so its best becomes version 1 and the champion.
    code, summary, out = run_sweep(tmp_path, tracking, "first", name, capsys, best_loss=0.0449)
    _assert_first_model_becomes_the_champion(name, code, summary, out)

    # A worse sweep: nothing registered, the alias stays, and every place says why.
    code, summary, out = run_sweep(tmp_path, tracking, "worse", name, capsys, best_loss=0.0636)
    _assert_worse_model_is_not_registered(tmp_path, name, code, summary, out)

    # An equal value does not beat it either (strictly better only).
    _, summary, out = run_sweep(tmp_path, tracking, "equal", name, capsys, best_loss=0.0449)
    assert "not registered: best 0.0449 does not beat champion v1 (0.0449)" in out
    assert registry(name) == ([1], 1)

    # A better sweep: version 2, and the alias moves to it.
    code, summary, out = run_sweep(tmp_path, tracking, "better", name, capsys, best_loss=0.0312)
    _assert_better_model_becomes_v2_and_the_champion(tmp_path, name, code, summary, out)

    # Resubmitting the first sweep registers nothing new and leaves the alias on the better one.
    code, summary, out = run_sweep(tmp_path, tracking, "first", name, capsys, build=False)
    _assert_resubmitted_first_is_not_the_champion(name, code, summary, out)


def _assert_first_model_becomes_the_champion(
    name: str, code: int, summary: dict[str, Any], out: list[str]
) -> None:
    assert code == 0
    line = f"model: models:/{name}/1 (trial {BEST_TRIAL}), now the champion"
    assert line in out
    assert summary["model"] == {
        "name": name, "version": 1, "uri": f"models:/{name}/1", "champion": True,
    }  # fmt: skip
    assert summary["registration"] == {"registered": True, "message": line, "champion": None}
    assert registry(name) == ([1], 1)


def _assert_worse_model_is_not_registered(
    tmp_path: Path, name: str, code: int, summary: dict[str, Any], out: list[str]
) -> None:
    assert code == 0 and summary["status"] == "succeeded"
    line = "not registered: best 0.0636 does not beat champion v1 (0.0449)"
    assert line in out
    assert summary["model"] is None
    assert summary["registration"] == {
        "registered": False, "message": line, "champion": {"version": 1, "value": 0.0449},
    }  # fmt: skip
    assert registry(name) == ([1], 1)
    assert shown(tmp_path, "worse", summary) == (line, line)


def _assert_better_model_becomes_v2_and_the_champion(
    tmp_path: Path, name: str, code: int, summary: dict[str, Any], out: list[str]
) -> None:
    assert code == 0
    line = (
        f"model: models:/{name}/2 (trial {BEST_TRIAL}), now the champion"
        " (beats champion v1 (0.0449))"
    )
    assert line in out
    assert summary["model"] == {
        "name": name, "version": 2, "uri": f"models:/{name}/2", "champion": True,
    }  # fmt: skip
    assert summary["registration"] == {
        "registered": True, "message": line, "champion": {"version": 1, "value": 0.0449},
    }  # fmt: skip
    assert registry(name) == ([1, 2], 2)
    assert shown(tmp_path, "better", summary) == (line, line)
    from mlflow.tracking import MlflowClient

    tags = MlflowClient().get_model_version_by_alias(name, "champion").tags
    assert (tags["sweep"], tags["objective"], float(tags["objective_value"])) == (
        "better", "val_loss", 0.0312,
    )  # fmt: skip


def _assert_resubmitted_first_is_not_the_champion(
    name: str, code: int, summary: dict[str, Any], out: list[str]
) -> None:
    assert code == 0
    assert (
        f"model: models:/{name}/1 (trial {BEST_TRIAL}), not the champion:"
        " best 0.0449 does not beat champion v2 (0.0312)"
    ) in out
    assert summary["model"]["version"] == 1 and summary["model"]["champion"] is False
    assert registry(name) == ([1, 2], 2)


def test_a_resubmitted_sweep_registers_once_and_says_the_same(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"resub-{uuid.uuid4().hex[:6]}"
    run_sweep(tmp_path, tracking, "s-old", name, capsys, best_loss=0.3)
    _, first, out1 = run_sweep(tmp_path, tracking, "s-new", name, capsys, best_loss=0.2)
    _, again, out2 = run_sweep(tmp_path, tracking, "s-new", name, capsys, build=False)
    line = (
        f"model: models:/{name}/2 (trial {BEST_TRIAL}), now the champion (beats champion v1 (0.3))"
    )
    assert line in out1 and line in out2
    assert again["model"] == first["model"] and again["registration"] == first["registration"]
    assert registry(name) == ([1, 2], 2)


def test_maximize_beats_only_with_a_higher_value(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"max-{uuid.uuid4().hex[:6]}"
    acc = {"objective": "val_accuracy", "direction": "maximize"}
    run_sweep(tmp_path, tracking, "a", name, capsys, best_loss=0.2, **acc)  # accuracy 0.9
    assert registry(name) == ([1], 1)
    _, summary, out = run_sweep(tmp_path, tracking, "b", name, capsys, best_loss=0.4, **acc)
    assert "not registered: best 0.8 does not beat champion v1 (0.9)" in out
    assert summary["model"] is None and registry(name) == ([1], 1)
    _, summary, out = run_sweep(tmp_path, tracking, "c", name, capsys, best_loss=0.1, **acc)
    assert (
        f"model: models:/{name}/2 (trial {BEST_TRIAL}), now the champion (beats champion v1 (0.9))"
        in out
    )
    assert registry(name) == ([1, 2], 2)


def test_a_champion_chosen_on_another_metric_is_not_replaced(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"metric-{uuid.uuid4().hex[:6]}"
    run_sweep(tmp_path, tracking, "on-acc", name, capsys,
              objective="val_accuracy", direction="maximize")  # fmt: skip
    code, summary, out = run_sweep(tmp_path, tracking, "on-loss", name, capsys, best_loss=0.01)
    line = (
        "not registered: champion v1 was chosen on 'val_accuracy', this sweep optimises 'val_loss'"
    )
    assert code == 0 and line in out
    assert summary["registration"] == {
        "registered": False, "message": line, "champion": {"version": 1, "value": 0.9},
    }  # fmt: skip
    assert registry(name) == ([1], 1)


def test_a_failed_sweep_registers_nothing_and_leaves_the_alias(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"failed-{uuid.uuid4().hex[:6]}"
    run_sweep(tmp_path, tracking, "good", name, capsys, best_loss=0.2)
    code, summary, out = run_sweep(
        tmp_path, tracking, "over", name, capsys, best_loss=0.01, max_failed_trials=1
    )  # better, but 2 trials failed on a budget of 1
    line = "not registered: 2 trials failed, more than the budget of 1"
    assert code == 1 and summary["status"] == "failed" and line in out
    assert summary["model"] is None
    assert summary["registration"] == {"registered": False, "message": line, "champion": None}
    assert registry(name) == ([1], 1)
    assert shown(tmp_path, "over", summary) == (line, line)


def test_model_name_null_turns_registration_off(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, summary, out = run_sweep(tmp_path, tracking, "off", "", capsys)
    line = "model registration is off (tracking.model_name: null)"
    assert code == 0 and line in out
    assert summary["model"] is None
    assert summary["registration"] == {"registered": False, "message": line, "champion": None}
    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(tracking).experiment_id],
        "tags.`sweepyard.sweep_id` = 'off'",
    )
    assert runs and not any(MlflowClient().list_artifacts(r.info.run_id, "model") for r in runs)
    assert shown(tmp_path, "off", summary) == (line, line)


@pytest.mark.parametrize("config", ["sweep.yaml", "tpe.yaml"])
def test_a_null_model_name_compiles_to_an_empty_one(config: str, tmp_path: Path) -> None:
    from pipelines.build.argo import build as build_argo
    from pipelines.build.kfp import compile_package
    from pipelines.validate import validate_or_raise

    doc = yaml.safe_load((REPO / "pipelines" / config).read_text())
    doc["tracking"]["model_name"] = None
    cfg: SweepConfig = parse_config(doc)
    assert cfg.tracking.model_name is None
    args = steps.compare_args(cfg, sweep_id="s")
    assert args[args.index("--model-name") + 1] == ""
    assert compare_mod._parse_args(args).model_name == ""
    validate_or_raise(build_argo(cfg).to_dict(), "null model_name")
    package = tmp_path / "p.kfp.yaml"
    compile_package(cfg, package)
    pipeline_doc = next(yaml.safe_load_all(package.read_text()))
    params = pipeline_doc["root"]["inputDefinitions"]["parameters"]
    assert params["model_name"].get("defaultValue") == ""
    del doc["tracking"]["model_name"]
    assert parse_config(doc).tracking.model_name == "sweep-model"  # the default stays

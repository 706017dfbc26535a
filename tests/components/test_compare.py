"""compare against a real MLflow server: a hand-built sweep with known metrics is ranked, plotted,
summarised, and its best model registered and loaded back."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from components import compare as compare_mod
from components.budget import Budget
from components.contract import canonical_json, trial_id
from components.leaderboard import load_trials, rank, to_markdown
from components.summary import final_report
from pipelines.backends.mlflow_server import MlflowServer
from tests.support.compare import KNOWN, build_model, make_sweep


def test_compare_ranks_plots_registers_and_summarises(
    tmp_path: Path, tracking: str, mlflow_server: MlflowServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-known", mlflow_experiment=tracking)
    model_name = f"model-{uuid.uuid4().hex[:6]}"
    code, summary = _compare_known(model_name, shared, outputs)
    assert code == 0
    expected_order = [ids[c] for c in sorted(KNOWN, key=KNOWN.__getitem__)]
    _assert_summary_has_best_ranking_failures_and_totals(
        summary, shared, outputs, ids, expected_order, model_name, mlflow_server.url
    )
    _assert_leaderboard_printed_and_saved(capsys.readouterr().out, shared, expected_order)
    _assert_plots_are_readable_pngs(summary)
    client = MlflowClient()
    _assert_parent_run_holds_leaderboard_plots_and_totals(client, summary, ids)
    _assert_registered_model_is_the_best_and_loads_back(client, model_name, ids)
    _assert_final_report_names_plots_and_model(shared, summary, model_name)

    # Running compare again (a resubmitted sweep) registers nothing new.
    code, again = _compare_known(model_name, shared, outputs)
    assert code == 0 and again["model"]["version"] == 1
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1


def _compare_known(model_name: str, shared: Path, outputs: Path) -> tuple[int, dict[str, Any]]:
    return compare_mod.compare(
        "sweep-known",
        objective="val_loss",
        direction="minimize",
        model_name=model_name,
        shared=shared,
        outputs=outputs,
        budget=Budget(max_failed_trials=2),
    )


def _assert_summary_has_best_ranking_failures_and_totals(
    summary: dict[str, Any],
    shared: Path,
    outputs: Path,
    ids: dict[tuple[float, int], str],
    expected_order: list[str],
    model_name: str,
    mlflow_url: str,
) -> None:
    """The summary notify reads: best, ranking, failures listed with their error, totals."""
    on_disk = json.loads((shared / "sweeps/sweep-known/summary.json").read_text())
    assert (
        on_disk == json.loads((outputs / "summary").read_text()) == json.loads(json.dumps(summary))
    )
    assert summary["status"] == "succeeded"
    assert summary["best"]["trial_id"] == ids[(0.03, 128)]
    assert summary["best"]["value"] == pytest.approx(0.21)
    assert summary["best"]["params"]["lr"] == 0.03
    assert [r["trial_id"] for r in summary["leaderboard"]] == expected_order
    assert [r["rank"] for r in summary["leaderboard"]] == [1, 2, 3, 4]
    assert summary["trials"] == {"total": 6, "done": 4, "pruned": 0, "failed": 2, "skipped": 0}
    assert summary["pruned"] == [] and summary["compute_saved"] is None
    assert {f["trial_id"]: f["error"] for f in summary["failed"]} == {
        ids[(0.3, 32)]: "RuntimeError: loss is NaN at step 20",
        ids[(0.3, 128)]: "no result",
    }
    assert summary["preemptions"] == 2  # the two hidden=128 trials that finished
    assert summary["mlflow"]["experiment_url"].startswith(f"{mlflow_url}/#/experiments/")
    assert summary["mlflow"]["sweep_runs_url"].endswith(
        "&orderByKey=metrics.%60val_loss%60&orderByAsc=true"
    )
    assert summary["model"] == {
        "name": model_name, "version": 1, "uri": f"models:/{model_name}/1", "champion": True,
    }  # fmt: skip


def _assert_leaderboard_printed_and_saved(
    out: str, shared: Path, expected_order: list[str]
) -> None:
    """The leaderboard printed on stdout and saved: best first, failed ones last with the reason."""
    assert "2 failed (budget 2)" in out
    body = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[2].strip() for line in body[:4]] == expected_order
    assert "failed: no result" in body[-1] or "failed: no result" in body[-2]
    assert "plots:" in out
    rows = list(
        csv.DictReader(io.StringIO((shared / "sweeps/sweep-known/leaderboard.csv").read_text()))
    )
    assert [r["trial_id"] for r in rows[:4]] == expected_order
    assert float(rows[0]["val_loss"]) == pytest.approx(0.21)


def _assert_plots_are_readable_pngs(summary: dict[str, Any]) -> None:
    """Both plots are real images of a readable size."""
    for key in ("curves", "params"):
        with Image.open(summary["plots"][key]) as img:
            img.verify()
        with Image.open(summary["plots"][key]) as img:
            assert img.format == "PNG"
            assert img.width >= 800 and img.height >= 400, img.size


def _assert_parent_run_holds_leaderboard_plots_and_totals(
    client: Any, summary: dict[str, Any], ids: dict[tuple[float, int], str]
) -> None:
    """The parent run holds the leaderboard, the plots and the totals."""
    parent = client.get_run(summary["mlflow"]["run_id"])
    assert parent.data.tags["sweepyard.sweep_id"] == "sweep-known"
    assert parent.data.tags["sweepyard.best_trial"] == ids[(0.03, 128)]
    assert parent.data.metrics["best_val_loss"] == pytest.approx(0.21)
    assert parent.data.metrics["trials_failed"] == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard")}
    assert artifacts == {
        "leaderboard/leaderboard.md",
        "leaderboard/leaderboard.csv",
        "leaderboard/curves.png",
        "leaderboard/params.png",
    }


def _assert_registered_model_is_the_best_and_loads_back(
    client: Any, model_name: str, ids: dict[tuple[float, int], str]
) -> None:
    """The registered model is the best trial's, tagged, and loads back with the same outputs."""
    import mlflow.pyfunc

    version = client.get_model_version(model_name, "1")
    assert version.tags["sweep"] == "sweep-known"
    assert version.tags["trial"] == ids[(0.03, 128)]
    assert version.tags["data_hash"] == "d1g175"
    reference = build_model({"inputs": 64, "hidden": 128})
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/1")  # no trainer class involved
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.allclose(torch.as_tensor(loaded.predict(x.numpy())), reference(x))


def _assert_final_report_names_plots_and_model(
    shared: Path, summary: dict[str, Any], model_name: str
) -> None:
    """What `make submit` prints at the end (pipelines/ reads it from the shared disk)."""
    report = final_report(shared, "sweep-known")
    assert report is not None
    assert report.startswith("leaderboard of sweep sweep-known (succeeded):\n| rank")
    assert str(summary["plots"]["curves"]) in report and f"models:/{model_name}/1" in report


def test_sweep_without_a_success_fails_but_writes_its_summary(
    tmp_path: Path, tracking: str
) -> None:
    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-doomed", mlflow_experiment=tracking, known={})
    code, summary = compare_mod.compare(
        "sweep-doomed",
        objective="val_loss",
        direction="minimize",
        model_name="never",
        shared=shared,
        outputs=outputs,
    )
    assert code == 1
    written = json.loads((outputs / "summary").read_text())
    assert written["status"] == "failed"
    assert written["best"] is None and written["model"] is None
    assert written["reason"] == "no trial succeeded (2 failed)"
    assert sorted(f["trial_id"] for f in written["failed"]) == sorted(ids.values())
    assert summary == json.loads(json.dumps(written))


def test_a_sweep_past_its_failure_budget_fails_and_registers_nothing(
    tmp_path: Path,
    tracking: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Katib's maxFailedTrialCount: 2 failed trials (one gave up, one never ended) on a budget
    of 1 fail the sweep although 4 trials are done; the leaderboard is still written."""
    from mlflow.tracking import MlflowClient

    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    make_sweep(shared, "sweep-over", mlflow_experiment=tracking)
    name = f"over-{uuid.uuid4().hex[:6]}"
    code, summary = compare_mod.compare(
        "sweep-over", objective="val_loss", direction="minimize", model_name=name,
        shared=shared, outputs=outputs, budget=Budget(max_failed_trials=1),
    )  # fmt: skip
    assert code == 1
    assert summary["status"] == "failed" and summary["model"] is None
    assert summary["reason"] == "2 trials failed, more than the budget of 1"
    assert summary["trials"]["done"] == 4 and summary["max_failed_trials"] == 1
    assert MlflowClient().search_model_versions(f"name = '{name}'") == []
    out = capsys.readouterr().out
    assert "2 failed (budget 1)" in out and "| 1    |" in out  # the leaderboard, ranked
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]  # Sentry's event
    assert "2 trials failed, more than the budget of 1" in error
    assert "RuntimeError: loss is NaN at step 20" in error and "no result" in error


def test_a_best_trial_without_a_model_gives_a_sweep_that_succeeds_and_says_so(
    tmp_path: Path, tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-nomodel", mlflow_experiment=tracking, failed=None, missing=None)
    shutil.rmtree(shared / "sweeps/sweep-nomodel/trials" / ids[(0.03, 128)] / "model")
    code, summary = compare_mod.compare(
        "sweep-nomodel", objective="val_loss", direction="minimize", model_name="none",
        shared=shared, outputs=outputs,
    )  # fmt: skip
    assert code == 0 and summary["status"] == "succeeded" and summary["model"] is None
    assert summary["best"]["trial_id"] == ids[(0.03, 128)]
    assert "no model registered: the best trial saved none" in capsys.readouterr().out
    report = final_report(shared, "sweep-nomodel")
    assert report is not None and "no model registered: the best trial saved none" in report


def test_points_a_trial_left_spooled_reach_mlflow_once_before_the_curves_are_drawn(
    tmp_path: Path, tracking: str, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow was away when two trials exited: one finished (its run holds steps 0-50 of 60), one
    never wrote a result. compare sends what they spooled, without repeating what MLflow holds."""
    from mlflow.tracking import MlflowClient

    from components.runtime.sender import write_spool

    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-spooled", mlflow_experiment=tracking)
    trials = shared / "sweeps/sweep-spooled/trials"
    done, lost = ids[(0.03, 128)], ids[(0.3, 128)]
    # steps 40-50 reached the server before it went away; 51-60 did not
    write_spool(trials / done / "metrics.spool.jsonl",
                [("train_loss", 0.1 - s / 1000, 0, s) for s in range(40, 61)])  # fmt: skip
    (trials / lost).mkdir(parents=True)
    write_spool(trials / lost / "metrics.spool.jsonl",
                [("train_loss", 2.0 - s / 100, 0, s) for s in range(0, 8)])  # fmt: skip

    with caplog.at_level("INFO", logger="sweepyard.compare"):
        code, _ = compare_mod.compare(
            "sweep-spooled", objective="val_loss", direction="minimize", model_name="m-spooled",
            shared=shared, outputs=outputs, budget=Budget(max_failed_trials=2),
        )  # fmt: skip
    assert code == 0
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name(tracking).experiment_id],
        "tags.`sweepyard.sweep_id` = 'sweep-spooled' and tags.`sweepyard.role` = 'trial'",
    )
    by_trial = {r.data.tags["sweepyard.trial_id"]: r.info.run_id for r in runs}
    steps = [m.step for m in client.get_metric_history(by_trial[done], "train_loss")]
    assert sorted(steps) == list(range(61)), "every step once, the spooled tail included"
    history = {m.step: m.value for m in client.get_metric_history(by_trial[done], "train_loss")}
    assert history[60] == pytest.approx(0.04)
    assert [m.step for m in client.get_metric_history(by_trial[lost], "train_loss")] == list(
        range(8)
    )
    assert not list(trials.glob("*/metrics.spool.jsonl")), "delivered spools are removed"
    assert f"trial {done}: delivered its spooled metric points" in caplog.text


def test_the_sweep_runs_link_lists_the_trials_ranked_by_the_objective() -> None:
    from urllib.parse import parse_qs, urlsplit

    from components.links import sweep_runs_url

    def query(url: str) -> dict[str, str]:
        fragment = urlsplit(url).fragment  # the UI routes on the fragment: #/experiments/7/runs?...
        assert fragment.startswith("/experiments/7/runs?"), url
        return {k: v[0] for k, v in parse_qs(fragment.split("?", 1)[1]).items()}

    q = query(sweep_runs_url("http://mlflow:5000/", "7", "s-1", "val_loss", "minimize"))
    assert (
        q["searchFilter"] == "tags.`sweepyard.sweep_id` = 's-1' and tags.`sweepyard.role` = 'trial'"
    )
    # sorted by anything but the start time, MLflow's table lists child runs unfolded
    assert (q["orderByKey"], q["orderByAsc"]) == ("metrics.`val_loss`", "true")
    q = query(sweep_runs_url("http://mlflow:5000", "7", "s-1", "val_accuracy", "maximize"))
    assert (q["orderByKey"], q["orderByAsc"]) == ("metrics.`val_accuracy`", "false")
    q = query(sweep_runs_url("http://mlflow:5000", "7", "s-1"))  # no objective known (no compare)
    assert (q["orderByKey"], q["orderByAsc"]) == ("tags.`mlflow.runName`", "true")


def test_rank_maximize_and_bad_results(tmp_path: Path) -> None:
    sweep = tmp_path / "sweeps" / "s1"
    plan = []
    for i, (acc, status) in enumerate(
        [(0.9, "done"), (0.95, "done"), (None, "done"), (0.99, "failed")]
    ):
        params = {"i": i}
        tid = trial_id(params)
        plan.append({"id": tid, "params": canonical_json(params)})
        folder = sweep / "trials" / tid
        folder.mkdir(parents=True)
        result = {
            "status": status,
            "metrics": {"val_accuracy": acc} if acc else {},
            "params": params,
        }
        (folder / "result.json").write_text(json.dumps(result))
    (sweep / "trials" / plan[0]["id"] / "result.json").write_text("{not json")
    (sweep / "plan.json").write_text(json.dumps(plan))
    rows = rank(load_trials(tmp_path, "s1", "val_accuracy"), "maximize")
    assert [(r.params["i"], r.rank) for r in rows] == [(1, 1), *((i, None) for i in sorted(
        (0, 2, 3), key=lambda i: trial_id({"i": i})))]  # fmt: skip
    errors = {r.params["i"]: r.error for r in rows}
    assert errors[0] is not None and errors[0].startswith("unreadable result.json")
    assert errors[2] == "objective 'val_accuracy' missing or NaN in result.json"
    assert errors[3] == "status 'failed'"
    assert "| 1    |" in to_markdown(rows, "val_accuracy")


def test_broken_plan_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sweeps" / "s2").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"plan.json: no plan for sweep 's2'"):
        load_trials(tmp_path, "s2", "val_loss")
    (tmp_path / "sweeps" / "s2" / "plan.json").write_text('[{"id": "x", "params": "{bad"}]')
    with pytest.raises(ValueError, match=r"plan.json: entry 0 \(x\): params not JSON"):
        load_trials(tmp_path, "s2", "val_loss")


def test_curve_smoothing_is_debiased_like_tensorboard() -> None:
    from components.plots import ema

    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    smoothed = ema([1.0, 0.0] * 20, weight=0.8)
    assert max(smoothed[10:]) - min(smoothed[10:]) < 0.25  # the zig-zag is flattened


def test_the_cost_and_lost_work_agree_in_the_leaderboard_mlflow_and_the_digest(
    tmp_path: Path, tracking: str
) -> None:
    """Every trial held one L4 spot node for a hand-written hour (one redid 600 s after a
    preemption): the leaderboard's line, the parent run's metrics and the digest's Cost field
    all say the figures that pricing that timeline gives."""
    from mlflow.tracking import MlflowClient

    from components.cost import Resources, cost_text, default_prices
    from components.notify import build_message

    shared, outputs = tmp_path / "shared", tmp_path / "outputs"
    ids = make_sweep(shared, "sweep-cost", mlflow_experiment=tracking, failed=None, missing=None)
    for n, tid in enumerate(sorted(ids.values())):
        records = [{"event": "start", "id": "a", "time": 0.0, "lost": 0},
                   {"event": "end", "id": "a", "time": 1800.0, "outcome": "preempted"},
                   {"event": "start", "id": "b", "time": 1800.0, "lost": 0},
                   {"event": "end", "id": "b", "time": 3600.0, "outcome": "done",
                    "redone_steps": 60 if n == 0 else 0,
                    "redone_seconds": 600.0 if n == 0 else 0.0}]  # fmt: skip
        path = shared / "sweeps/sweep-cost/trials" / tid / "attempts.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    l4 = Resources("nvidia-l4", 1, 4.0, True)
    code, summary = compare_mod.compare(
        "sweep-cost", objective="val_loss", direction="minimize", model_name="",
        shared=shared, outputs=outputs, budget=Budget(resources=l4),
    )  # fmt: skip
    assert code == 0
    cost = summary["cost"]
    rate = default_prices().rate("spot", "nvidia-l4", 1, 4.0)
    assert cost["gpu_hours"] == 4.0 and cost["cost"] == round(4 * rate, 2)
    assert cost["lost"] == round(rate / 6, 2) and cost["lost_steps"] == 60
    assert cost["spot_saved"] == round(cost["on_demand"] - cost["cost"], 2) > 0
    line = cost_text(cost)
    assert line in (shared / "sweeps/sweep-cost/leaderboard.md").read_text()
    metrics = MlflowClient().get_run(summary["mlflow"]["run_id"]).data.metrics
    assert metrics["cost_cost"] == cost["cost"] and metrics["cost_lost"] == cost["lost"]
    assert metrics["cost_on_demand"] == cost["on_demand"] and metrics["gpu_hours"] == 4.0
    digest = build_message(
        sweep_id="sweep-cost", status="Succeeded", workflow_name="w", summary=summary, env={}
    )
    fields = [f["text"] for b in digest["blocks"] for f in b.get("fields", [])]
    assert f"*Cost*\n{line}" in fields

"""Pruned trials where users look: leaderboard, plots, Slack digest, `make status` (issue 12).

A hand-built sweep as train leaves it: two complete trials, two the study pruned (one of them with
an intermediate value better than any final one), one failed. Each view must show which trials
were cut and at which step, and the compute the cuts saved.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from components import notify
from components.budget import Budget
from components.compare import compare
from components.compute_saved import compute_saved
from components.contract import canonical_json, trial_id
from components.leaderboard import load_trials, rank, to_csv, to_markdown
from components.model_folder import save_module
from components.outputs import kfp_metadata
from components.plots import curves_figure, curves_png, params_png
from pipelines.backends.local.status import status
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.config import load_config
from tests.support.notify import WEBHOOK_PATH, _env, _fields, _notify, _payload
from tests.support.receivers import receiving

REPO = Path(__file__).resolve().parents[1]
STEPS = 100
# (lr, status, steps run, objective value); the 0.5 trial was cut while looking best
TRIALS = [
    (0.1, "done", STEPS, 0.30),
    (0.2, "done", STEPS, 0.25),
    (0.3, "pruned", 30, 0.20),
    (0.4, "pruned", 10, 0.90),
    (0.5, "failed", 7, None),
]
SAVED_LINE = "compute saved: 40 % of trial-steps (240 of 400 run)"  # 1 - (100+100+30+10)/(4*100)


def make_sweep(shared: Path, sweep_id: str, *, plan: bool = True, steps_run: bool = True) -> dict:
    """Trial folders with ``result.json`` as the supervisor writes them; returns {lr: trial id}."""
    ids, entries = {}, []
    for lr, status_, ran, value in TRIALS:
        params = {"lr": lr, "hidden": 32, "steps": STEPS}
        tid = ids[lr] = trial_id(params)
        entries.append({"id": tid, "params": canonical_json(params)})
        folder = shared / "sweeps" / sweep_id / "trials" / tid
        folder.mkdir(parents=True)
        result: dict[str, Any] = {
            "trial_id": tid,
            "params": params,
            "status": status_,
            "error": "RuntimeError: loss is NaN" if status_ == "failed" else None,
            "step": ran,
            "metrics": {"val_loss": value} if value is not None else {},
            "objective": {"metric": "val_loss", "direction": "minimize", "value": value},
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),  # in this run
        }
        if steps_run and status_ != "failed":
            result["steps_run"] = ran
        if status_ == "pruned":
            result["pruned_at_step"] = ran
        (folder / "result.json").write_text(json.dumps(result))
    if plan:
        (shared / "sweeps" / sweep_id / "plan.json").write_text(json.dumps(entries))
    return ids


def test_compute_saved_counts_trial_steps_against_the_budget() -> None:
    done = [{"status": "done", "steps_run": 400, "params": {"steps": 400}}] * 5
    pruned = [{"status": "pruned", "steps_run": 150, "params": {"steps": 400}}] * 10
    pruned.append({"status": "pruned", "steps_run": 290, "params": {"steps": 400}})
    failed = [{"status": "failed", "step": 12, "params": {"steps": 400}}]
    found = compute_saved([*done, *pruned, *failed])
    assert found is not None and (found.trials, found.pruned) == (16, 11)
    assert found.text() == "compute saved: 41 % of trial-steps (3,790 of 6,400 run)"

    # results written before steps_run existed, and a trainer with no `steps` param: the last step
    # reached, and the longest complete trial as the budget
    old = [
        {"status": "done", "step": 50, "params": {"epochs": 5}},
        {"status": "pruned", "pruned_at_step": 10, "step": 10, "params": {"epochs": 5}},
        {"status": "pruned", "params": {}},  # says nothing: left out, and said so
    ]
    found = compute_saved(old)
    assert found is not None
    assert found.text() == (
        "compute saved: 40 % of trial-steps (60 of 100 run);"
        " 1 trial(s) without a step count not counted"
    )
    assert compute_saved([{"status": "failed"}]) is None


def test_leaderboard_lists_pruned_trials_after_complete_ones_with_their_step(
    tmp_path: Path,
) -> None:
    ids = make_sweep(tmp_path, "s1")
    rows = rank(load_trials(tmp_path, "s1", "val_loss"), "minimize")
    assert [r.trial_id for r in rows] == [ids[0.2], ids[0.1], ids[0.3], ids[0.4], ids[0.5]]
    assert [r.rank for r in rows] == [1, 2, 3, 4, None]
    board = to_markdown(rows, "val_loss")
    lines = {tid: next(line for line in board.splitlines() if tid in line) for tid in ids.values()}
    assert "| pruned @ step 30 " in lines[ids[0.3]] and "| 0.2 " in lines[ids[0.3]]
    assert "| pruned @ step 10 " in lines[ids[0.4]]
    assert "| done " in lines[ids[0.2]] and "failed: RuntimeError" in lines[ids[0.5]]
    assert "2 trial(s) pruned by early stopping, ranked after the complete ones" in board
    assert "last intermediate value reported before the cut, not a final one" in board
    assert SAVED_LINE in board
    table = {r["trial_id"]: r for r in csv.DictReader(io.StringIO(to_csv(rows, "val_loss")))}
    assert table[ids[0.3]]["status"] == "pruned" and table[ids[0.3]]["pruned_at_step"] == "30"

    # on request, pruned trials rank among complete ones by value, the best still a complete one
    mixed = rank(load_trials(tmp_path, "s1", "val_loss"), "minimize", pruned_last=False)
    assert [r.trial_id for r in mixed][:3] == [ids[0.2], ids[0.3], ids[0.1]]


def test_a_sweep_without_plan_lists_its_suggested_trials_and_old_results_still_count(
    tmp_path: Path,
) -> None:
    ids = make_sweep(tmp_path, "adaptive", plan=False, steps_run=False)
    rows = rank(load_trials(tmp_path, "adaptive", "val_loss"), "minimize")
    assert sorted(r.trial_id for r in rows) == sorted(ids.values())
    assert [r.state for r in rows if r.pruned] == ["pruned @ step 30", "pruned @ step 10"]
    assert SAVED_LINE in to_markdown(rows, "val_loss")  # from `step` / `pruned_at_step`


def _histories(ids: dict[float, str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    out = {}
    for lr, _, ran, value in TRIALS:
        final = value if value is not None else 2.0
        curve = [(s, final + (2.3 - final) * (1 - s / STEPS) ** 2) for s in range(0, ran + 1, 5)]
        out[ids[lr]] = {"val_loss": curve, "train_loss": [(s, v * 0.8) for s, v in curve]}
    return out


def test_curves_of_pruned_trials_end_in_a_cut_marker_named_in_the_legend(tmp_path: Path) -> None:
    ids = make_sweep(tmp_path, "s1")
    rows = rank(load_trials(tmp_path, "s1", "val_loss"), "minimize")
    fig = curves_figure(rows, _histories(ids), sweep_id="s1", objective="val_loss")
    title = fig._suptitle.get_text() if fig._suptitle else ""
    assert "3/5 trials done" not in title and "2/5 trials done, 2 pruned" in title
    assert SAVED_LINE in title
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any(t.endswith("[pruned @ step 30]") and ids[0.3][:6] in t for t in legend), legend
    for ax in fig.axes:
        cuts = [ln for ln in ax.get_lines() if ln.get_marker() == "x" and len(ln.get_xdata()) == 1]
        assert sorted(int(ln.get_xdata()[0]) for ln in cuts) == [10, 30]  # where each was cut
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and ln.get_label()]
        assert len([ln for ln in dashed if len(ln.get_xdata()) > 1]) == 2
        key = [t.get_text() for t in ax.get_legend().get_texts()]
        assert key == ["complete", "pruned: cut at x", "failed"]
    # the files compare writes (looked at by eye too: dashed, ending in a large x)
    for png in (
        curves_png(tmp_path / "curves.png", rows, _histories(ids), sweep_id="s1", objective="val_loss"),
        params_png(tmp_path / "params.png", rows, sweep_id="s1", objective="val_loss", direction="minimize"),
    ):  # fmt: skip
        assert png.stat().st_size > 10_000


def test_slack_digest_counts_pruned_trials_and_the_compute_saved(tmp_path: Path) -> None:
    """The real exit-handler CLI posts to a loopback Slack webhook; compare never ran."""
    ids = make_sweep(tmp_path, "s1", plan=False)  # an adaptive sweep: trials, no plan
    summary = notify.fallback_summary(tmp_path, "s1")
    assert [f["trial_id"] for f in summary["failed"]] == [ids[0.5]]  # pruned is not failed
    with receiving() as slack:
        proc = _notify(_env(tmp_path, SLACK_WEBHOOK_URL=slack.url + WEBHOOK_PATH), "Failed", "s1")
        payload = _payload(slack)
    assert proc.returncode == 0, proc.stderr
    fields = _fields(payload)
    assert fields["Trials"] == "2 done / 2 pruned / 1 failed (of 5)"
    assert fields["Early stopping"].startswith("2 pruned (`")
    assert f"`{ids[0.3]}` @ step 30" in fields["Early stopping"]
    assert f"`{ids[0.4]}` @ step 10" in fields["Early stopping"]
    assert fields["Early stopping"].endswith("\n" + SAVED_LINE)
    assert payload["text"].startswith("Sweep s1 Failed: 2 done / 2 pruned / 1 failed (of 5)")


def _run_json(root: Path, shared: Path, ids: dict[float, str]) -> None:
    nodes = [
        {"name": f"train({i})", "type": "Pod", "phase": "Failed" if lr == 0.5 else "Succeeded",
         "inputs": {"trial-id": tid}, "attempts": [{}], "message": "exit 3" if lr == 0.5 else ""}
        for i, (lr, tid) in enumerate(ids.items())
    ]  # fmt: skip
    run = root / ".sweepyard" / "runs" / "sweep-x1"
    run.mkdir(parents=True)
    doc = {"name": "sweep-x1", "pipeline": "sweep", "sweep_id": "s1", "status": "Failed",
           "started": time.time() - 60, "volumes": {"shared": str(shared)}, "nodes": nodes}  # fmt: skip
    (run / "run.json").write_text(json.dumps(doc))


def test_make_status_shows_each_pruned_trial_and_the_compute_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    ids = make_sweep(shared, "s1")
    _run_json(tmp_path, shared, ids)
    assert status(cfg=load_config(REPO / "pipelines" / "sweep.yaml"), project_root=tmp_path) == 0
    out = capsys.readouterr().out
    row = {lr: next(line for line in out.splitlines() if tid in line) for lr, tid in ids.items()}
    assert "pruned @ step 30" in row[0.3] and "pruned @ step 10" in row[0.4]
    assert "val_loss=0.2 (pruned @ step 30)" in row[0.3]  # the value is the one at the cut
    assert "│ done " in row[0.1] and "│ failed " in row[0.5]
    assert f"2 trial(s) pruned by early stopping; {SAVED_LINE}" in out


def test_compare_summarises_pruned_trials_for_notify_and_the_parent_run(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"pruned-{uuid.uuid4().hex[:8]}")
    mlflow.set_tracking_uri(mlflow_server.url)
    shared = tmp_path / "shared"
    ids = make_sweep(shared, "s1")
    save_module(nn.Linear(4, 2), shared / "sweeps/s1/trials" / ids[0.2] / "model")
    code, summary = compare(
        "s1", objective="val_loss", direction="minimize", model_name=f"m-{uuid.uuid4().hex[:6]}",
        shared=shared, outputs=tmp_path / "outputs", budget=Budget(max_failed_trials=1),
    )  # fmt: skip
    assert code == 0 and summary["best"]["trial_id"] == ids[0.2]  # not the better-looking cut one
    assert summary["trials"] == {"total": 5, "done": 2, "pruned": 2, "failed": 1, "skipped": 0}
    assert {p["trial_id"]: p["at_step"] for p in summary["pruned"]} == {ids[0.3]: 30, ids[0.4]: 10}
    assert summary["compute_saved"]["text"] == SAVED_LINE
    assert SAVED_LINE in (shared / "sweeps/s1/leaderboard.md").read_text()
    parent = MlflowClient().get_run(summary["mlflow"]["run_id"])
    assert parent.data.metrics["trials_pruned"] == 2
    assert parent.data.metrics["compute_saved"] == pytest.approx(0.4)
    kfp = kfp_metadata(summary)["metrics"]  # the KFP run page's metrics
    assert (kfp["trials_pruned"], kfp["compute_saved"]) == (2, pytest.approx(0.4))
    message = notify.build_message(sweep_id="s1", status="Succeeded", workflow_name="s1",
                                   summary=summary, env={})  # fmt: skip
    fields = _fields(message)
    assert fields["Early stopping"] == (
        f"2 pruned (`{ids[0.3]}` @ step 30, `{ids[0.4]}` @ step 10)\n{SAVED_LINE}"
    )

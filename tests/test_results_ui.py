"""A sweep's results where each UI's users look, checked as a user would (issue 16).

One local sweep under CHAOS (``make submit`` with a loopback MLflow and a loopback Slack receiver),
then: every trial's preemption count is the one the backend injected, in the summary table, the
leaderboard, MLflow and the Slack digest; the parent run ended FINISHED (FAILED for a sweep that
failed); ``make ui`` serves MLflow and TensorBoard, and headless Chromium finds the sweep's runs
there. Screenshots land in ``.sweepyard/screenshots/`` (CI keeps that folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends import local
from pipelines.backends.local import cli as local_cli
from pipelines.build.argo import build
from pipelines.config import load_config, parse_config
from tests.conftest import REPO
from tests.support.receivers import receiving

CONFIG = Path(__file__).parent / "configs" / "local_small.yaml"
CHAOS_SEED = 38  # preempts train(0)'s first attempt 0.56 s in (while it still imports torch) ...
CHAOS_WINDOW = 5.0  # ... with this window (tests/support/local_sweep.py)
SCREENSHOTS = REPO / ".sweepyard" / "screenshots"
pytestmark = pytest.mark.slow


@dataclass
class Sweep:
    root: Path
    sweep_id: str
    out: str
    code: int
    run: dict[str, Any]
    slack: list[dict[str, Any]]

    def client(self) -> Any:
        """A client of the store the run's own loopback MLflow server kept (what `make ui` serves)."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(f"sqlite:///{self.root / '.sweepyard' / 'mlflow' / 'mlflow.db'}")

    @property
    def folder(self) -> Path:
        return self.root / ".sweepyard" / "shared" / "sweepyard-shared" / "sweeps" / self.sweep_id


def submit(root: Path, sweep_id: str, raw: dict[str, Any], chaos: float) -> Sweep:
    """``make submit`` as a user runs it: no MLflow configured, so the run starts its own."""
    manifest = build(parse_config(raw, source=str(CONFIG))).to_dict()
    with receiving() as slack, pytest.MonkeyPatch.context() as mp:
        for name in ("SWEEPYARD_SHARED", "SENTRY_DSN", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):  # fmt: skip
            mp.delenv(name, raising=False)
        mp.setenv("SLACK_WEBHOOK_URL", f"{slack.url}/services/T/B/results")
        mp.chdir(REPO)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = local_cli.submit(
                manifest,
                sweep_id=sweep_id,
                chaos=chaos,
                project_root=root,
                seed=CHAOS_SEED,
                chaos_window=CHAOS_WINDOW,
            )
        digests = [json.loads(r.body) for r in slack.requests]
    (run_dir,) = [d for d in (root / ".sweepyard" / "runs").iterdir() if d.is_dir()]
    run = json.loads((run_dir / "run.json").read_text())
    return Sweep(root, sweep_id, out.getvalue(), code, run, digests)


@pytest.fixture(scope="module")
def chaos_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tracking"]["experiment"] = "results-ui"
    return submit(tmp_path_factory.mktemp("chaos"), "chaos-ui", raw, chaos=0.5)


def injected(sweep: Sweep) -> dict[str, int]:
    """Preemptions the backend injected, per trial (run.json: attempts it preempted)."""
    return {
        n["inputs"]["trial-id"]: sum(bool(a["preempted"]) for a in n["attempts"])
        for n in sweep.run["nodes"]
        if n["type"] == "Pod" and n["template"] == "train"
    }


def table_column(text: str, header: str, key: str) -> dict[str, str]:
    """{row's `key` cell: its `header` cell} of a rich or Markdown table in ``text``."""
    rows = [[c.strip() for c in re.split(r"[│┃|]", line)[1:-1]] for line in text.splitlines()
            if line.startswith(("│", "┃", "|"))]  # fmt: skip
    head = next(r for r in rows if header in r and key in r)
    return {r[head.index(key)]: r[head.index(header)] for r in rows if r != head and len(r) == len(head)}  # fmt: skip


def test_chaos_preemptions_agree_in_summary_leaderboard_mlflow_and_slack(chaos_sweep: Sweep) -> None:  # fmt: skip
    assert chaos_sweep.code == 0, chaos_sweep.out[-3000:]
    truth = injected(chaos_sweep)
    assert sum(truth.values()) >= 1, "the seed preempts at least one attempt"
    # the live log said so
    assert len(re.findall(r"\) preempted: attempt \d+ of trial", chaos_sweep.out)) == sum(truth.values())  # fmt: skip

    summary = table_column(chaos_sweep.out, "preempted", "trial")
    assert {t: int(summary[t] or 0) for t in truth} == truth, chaos_sweep.out[-4000:]
    board = table_column((chaos_sweep.folder / "leaderboard.md").read_text(), "preemptions", "trial")  # fmt: skip
    assert {t: int(board[t]) for t in truth} == truth

    client = chaos_sweep.client()
    exp = client.get_experiment_by_name("results-ui")
    runs = client.search_runs([exp.experiment_id], "tags.`sweepyard.sweep_id` = 'chaos-ui'")
    trials = {r.data.tags["sweepyard.trial_id"]: r for r in runs if r.data.tags["sweepyard.role"] == "trial"}  # fmt: skip
    assert {t: int(r.data.tags["sweepyard.preemptions"]) for t, r in trials.items()} == truth
    (parent,) = [r for r in runs if r.data.tags["sweepyard.role"] == "sweep"]
    assert parent.info.status == "FINISHED" and parent.info.end_time
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    (digest,) = chaos_sweep.slack
    text = json.dumps(digest, ensure_ascii=False)
    slack = {t: int(n) for t, n in re.findall(r"`([0-9a-f]{12})` ×(\d+)", text)}
    assert slack == {t: n for t, n in truth.items() if n}
    assert f"/#/experiments/{exp.experiment_id}/runs?searchFilter=" in text

    # the last lines say how to open the results; no link to the run's stopped MLflow server
    tail = chaos_sweep.out.rstrip().splitlines()[-3:]
    assert "`make ui PIPELINE=sweep`" in tail[0] and "http://" not in "\n".join(tail)


def test_status_lists_params_preemptions_and_the_output_artifacts(
    chaos_sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert local.status(cfg=load_config(CONFIG), project_root=chaos_sweep.root) == 0
    out = capsys.readouterr().out
    for trial, count in injected(chaos_sweep).items():
        (row,) = [line for line in out.splitlines() if trial in line and "│" in line]  # its row
        assert re.search(r"hidden=\d+ lr=0\.0\d+", row), row  # the params beside the id
        spans = [line for line in out.splitlines() if trial in line and "│" not in line]
        assert len(spans) == 1 and "imports" in spans[0] and "exit" in spans[0], spans
        assert f"│ {count} " in row, row
    kept = chaos_sweep.folder.parents[3] / "runs" / chaos_sweep.run["name"] / "artifacts" / "compare"  # fmt: skip
    assert f"compare/leaderboard.md: {kept / 'leaderboard.md'}" in out
    assert (kept / "leaderboard.md").read_text() == (chaos_sweep.folder / "leaderboard.md").read_text()  # fmt: skip
    assert "<img" in (kept / "plots.html").read_text()


def test_failed_sweep_ends_its_parent_run_failed_with_the_reason_shown(tmp_path: Path) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tracking"]["experiment"] = "results-ui-failed"
    raw["data"]["source"] = str(tmp_path / "no-such-data.csv")
    sweep = submit(tmp_path, "failing-ui", raw, chaos=0.0)
    assert sweep.code == 1
    failed = [line for line in sweep.out.splitlines() if line.startswith("  fetch: ")]
    assert failed and "no-such-data.csv" in failed[0] and "retry" not in failed[0].split("(")[0]
    client = sweep.client()
    exp = client.get_experiment_by_name("results-ui-failed")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`sweepyard.role` = 'sweep'")
    assert parent.info.status == "FAILED" and parent.info.end_time


@pytest.fixture
def served(chaos_sweep: Sweep) -> Iterator[Any]:
    from pipelines import ui

    home = chaos_sweep.root / ".sweepyard"
    with ui.serve(
        mlflow_store=home / "mlflow", shared=home / "shared" / "sweepyard-shared",
        experiment="results-ui", mlflow_port=0, tensorboard_port=0,
    ) as server:  # fmt: skip
        yield server


def test_mlflow_and_tensorboard_show_the_sweep_in_a_browser(chaos_sweep: Sweep, served: Any) -> None:  # fmt: skip
    from tests.support.browser import browser

    summary = json.loads((chaos_sweep.folder / "summary.json").read_text())
    objective = summary["objective"]
    runs_url, tb_url = served.sweep_urls(chaos_sweep.sweep_id, objective["metric"], objective["direction"])  # fmt: skip
    trials = sorted(injected(chaos_sweep))
    ranked = [row["trial_id"] for row in summary["leaderboard"]]
    assert sorted(ranked) == trials
    with browser() as page:
        page.open(runs_url)
        # every trial listed at once (not folded under the parent run), best first
        text = page.wait_for(*trials, "Training runs", "matching runs", "Sort: val_loss")
        assert f" {len(trials)} matching runs" in " ".join(text.split()), text[:3000]
        assert [text.index(t) for t in ranked] == sorted(text.index(t) for t in ranked), text[:3000]
        page.screenshot(SCREENSHOTS / "mlflow-sweep-runs.png")
        page.open(f"{tb_url}&tagFilter=val_loss")  # the objective's chart first
        text = page.wait_for(*(f"{chaos_sweep.sweep_id}/{t}" for t in trials), "val_loss")
        # the objective's curves are drawn: a line per run (Plottable's SVG paths)
        page.wait_for_count("path.line", at_least=len(trials))
        runs = set(re.findall(rf"{chaos_sweep.sweep_id}/([0-9a-f]{{12}}) hidden=\d+ lr=[0-9.]+", text))  # fmt: skip
        assert runs == set(trials)  # one run per trial, named by its params
        page.screenshot(SCREENSHOTS / "tensorboard-scalars.png")

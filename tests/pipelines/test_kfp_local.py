"""The KFP package runs under ``kfp.local`` with the real components, like the local Argo path.

``kfp.local``'s ``SubprocessRunner`` refuses container components (it cannot pull an image); here the
image's environment *is* this virtualenv (the image installs the same lock file), so the test lifts
that one guard and runs the compiled package's own commands as subprocesses. Everything else is
``kfp.local`` as shipped: the nested fan-out, ``ParallelFor`` (at most 2 at a time there),
``Collected``, ``ignore_upstream_failure`` and the ``ExitHandler`` with ``PipelineTaskFinalStatus``.
``kfp.local`` ignores the Kubernetes platform config (claim, secrets, placement): the shared disk is
the config's ``mount_path`` (a temporary folder here) and secrets come from the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.contract import trial_id
from pipelines.backends.local import run_workflow
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build as build_argo
from pipelines.config import SweepConfig, parse_config
from tests.conftest import REPO
from tests.support.kfp_local import run_kfp_local
from tests.support.receivers import Receiver

CONFIG = Path(__file__).parents[1] / "configs" / "kfp_local.yaml"
pytestmark = pytest.mark.slow


def config(shared: Path, mlflow_url: str) -> SweepConfig:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["cluster"] = {"mount_path": str(shared)}
    raw["tracking"]["mlflow_uri"] = mlflow_url
    return parse_config(raw, source=str(CONFIG))


def kfp_artifacts(root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """compare's output artifacts under kfp.local's pipeline root: (file, metadata) by name."""
    (output,) = [p for p in root.rglob("executor_output.json") if "compare" in str(p)]
    found = json.loads(output.read_text())["artifacts"]
    out = {}
    for name, listed in found.items():
        (artifact,) = listed["artifacts"]
        path = Path(artifact["uri"])
        assert path.is_file(), f"{name}: {path}"
        out[name] = (path, artifact["metadata"])
    assert set(out) == {"leaderboard", "plots", "metrics", "model"}
    return out


def only_sweep(shared: Path) -> Path:
    (sweep,) = (shared / "sweeps").iterdir()
    return sweep


def leaderboard(sweep: Path) -> list[tuple[str, str, float]]:
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["trials"]["failed"] == 0
    return [(row["trial_id"], row["status"], row["value"]) for row in summary["leaderboard"]]


def planned_ids(sweep: Path) -> list[str]:
    plan: Any = json.loads((sweep / "plan.json").read_text())
    trials = plan["trials"] if isinstance(plan, dict) else plan
    return sorted(t["id"] for t in trials)


def test_kfp_local_matches_the_local_argo_run(
    tmp_path: Path, mlflow_server: MlflowServer, slack: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = sorted(
        trial_id({"lr": lr, "steps": 20, "seed": 0, "hidden": 16, "batch_size": 32})
        for lr in (0.003, 0.03)
    )

    kfp_shared = tmp_path / "kfp-shared"
    run_kfp_local(config(kfp_shared, mlflow_server.url), tmp_path / "kfp", monkeypatch)
    kfp_sweep = only_sweep(kfp_shared)

    argo_cfg = config(tmp_path / "unused", mlflow_server.url)
    result = run_workflow(
        build_argo(argo_cfg).to_dict(),
        run_dir=tmp_path / "argo-run",
        shared_root=tmp_path / "argo-shared",
        env={"MLFLOW_TRACKING_URI": mlflow_server.url},
        progress=False,
        cwd=REPO,
    )
    assert result.ok, {n.name: n.message for n in result.nodes.values()}
    argo_sweep = only_sweep(result.volumes["shared"])

    # sweep_id "" became each run's own name: the KFP run's id, the Argo workflow's name.
    assert kfp_sweep.name != argo_sweep.name and argo_sweep.name == result.name
    assert planned_ids(kfp_sweep) == planned_ids(argo_sweep) == expected
    kfp_board, argo_board = leaderboard(kfp_sweep), leaderboard(argo_sweep)
    assert [row[:2] for row in kfp_board] == [row[:2] for row in argo_board]
    assert {row[1] for row in kfp_board} == {"done"} and len(kfp_board) == 2
    for (_, _, kfp_value), (_, _, argo_value) in zip(kfp_board, argo_board, strict=True):
        assert kfp_value == pytest.approx(argo_value, rel=1e-3, abs=1e-4)
    for tid in expected:
        assert (kfp_sweep / "trials" / tid / "result.json").is_file()
        assert list((kfp_shared / "tensorboard" / kfp_sweep.name).glob(f"{tid} lr=*"))

    # The run page's artifacts: compare's Markdown, HTML, Metrics and Model, with their metadata.
    artifacts = kfp_artifacts(tmp_path / "kfp" / "kfp-root")
    argo_board = result.run_dir / "artifacts" / "compare" / "leaderboard.md"
    assert artifacts["leaderboard"][0].read_text() == argo_board.read_text()
    assert "| rank | trial" in argo_board.read_text()
    page = artifacts["plots"][0].read_text()
    assert page.count("<img") == 2 and "data:image/png;base64," in page
    best = json.loads((kfp_sweep / "summary.json").read_text())["best"]
    assert artifacts["metrics"][1]["best_val_loss"] == pytest.approx(best["value"])
    model = artifacts["model"][1]
    assert model["registered_model"] == "kfp-parity-mlp" and model["version"] >= 1
    assert model["model_uri"] == f"models:/kfp-parity-mlp/{model['version']}"

    # Each exit handler sent one Slack digest, with Argo's status word in both.
    texts = [req.body.decode() for req in slack.requests]
    assert len(texts) == 2, texts
    assert kfp_sweep.name in texts[0] and "Succeeded" in texts[0]
    assert argo_sweep.name in texts[1] and "Succeeded" in texts[1]

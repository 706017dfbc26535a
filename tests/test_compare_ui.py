"""``make ui``: a real MLflow server over the local store and a real TensorBoard over the shared root."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pipelines import ui


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _local_state(tmp_path: Path) -> tuple[Path, Path, str]:
    """What a local `make submit` leaves: an MLflow store with the sweep's experiment, TB files."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from torch.utils.tensorboard import SummaryWriter

    store, shared = tmp_path / ".sweepyard" / "mlflow", tmp_path / ".sweepyard" / "shared"
    store.mkdir(parents=True)
    # The same sqlite store start_mlflow_server(store) keeps (the local backend's server).
    db = SqlAlchemyStore(f"sqlite:///{store / 'mlflow.db'}", str(store / "artifacts"))
    exp_id = db.create_experiment("sweep")
    db.engine.dispose()
    writer = SummaryWriter(str(shared / "tensorboard" / "sweep-ui" / "a1b2c3d4e5f6"))
    for step in range(5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    (shared / "sweeps" / "sweep-ui").mkdir(parents=True)
    (shared / "sweeps" / "sweep-ui" / "summary.json").write_text(
        json.dumps({"status": "succeeded", "plots": {"curves": "/x/curves.png"}})
    )
    return store, shared, exp_id


@pytest.mark.slow  # a TensorBoard and an MLflow server start: ~15 s idle, ~40 s on a busy machine
def test_serve_shows_the_local_store_and_the_shared_tensorboard_root(tmp_path: Path) -> None:
    store, shared, exp_id = _local_state(tmp_path)
    with ui.serve(mlflow_store=store, shared=shared, mlflow_port=0, tensorboard_port=0) as served:
        assert served.mlflow.url.startswith("http://127.0.0.1:")
        assert served.tensorboard.url.startswith("http://127.0.0.1:")
        assert served.experiment_url == f"{served.mlflow.url}/#/experiments/{exp_id}"
        deadline, tags = time.monotonic() + 60, dict[str, Any]()
        while time.monotonic() < deadline and not tags:
            tags = _get(f"{served.tensorboard.url}/data/plugin/scalars/tags")
            time.sleep(0.5)
        assert "train/loss" in tags["sweep-ui/a1b2c3d4e5f6"]
        mlflow_proc, tb_proc = served.mlflow.process, served.tensorboard.process
    assert mlflow_proc.poll() is not None and tb_proc.poll() is not None  # both stopped
    assert ui.recent_sweeps(shared)[0][0] == "sweep-ui"


@pytest.mark.slow
def test_main_check_prints_both_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, shared, exp_id = _local_state(tmp_path)
    code = ui.main(
        ["--pipeline", "sweep", "--project-root", str(tmp_path), "--shared", str(shared),
         "--mlflow-port", "0", "--tensorboard-port", "0", "--check"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert f"/#/experiments/{exp_id}   (store: {store})" in out
    assert "TensorBoard: http://127.0.0.1:" in out and str(shared / "tensorboard") in out
    assert "sweep sweep-ui: succeeded; leaderboard" in out and "/x/curves.png" in out

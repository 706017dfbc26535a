"""``python -m pipelines new``: a new pipeline and its trainer, refusing to overwrite, ready to run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets

from pipelines.scaffold import ScaffoldError, plan, write

REPO = Path(__file__).resolve().parents[2]
DIGITS = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def new(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "new", *args, "--root", str(root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_new_writes_a_pipeline_and_its_trainer_and_never_overwrites(tmp_path: Path) -> None:
    proc = new(tmp_path, "my-model")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pipelines" / "my-model.yaml").is_file()
    trainer = tmp_path / "trainers" / "my_model" / "train.py"
    assert "def train(trial: Trial, params: Params)" in trainer.read_text()
    assert "make submit PIPELINE=my-model" in proc.stdout
    trainer.write_text("# my edits\n")
    again = new(tmp_path, "my-model", "--kind", "command")
    assert again.returncode != 0 and "not overwriting" in again.stderr
    assert str(tmp_path / "pipelines" / "my-model.yaml") in again.stderr
    assert trainer.read_text() == "# my edits\n"  # nothing was touched


@pytest.mark.parametrize("name", ["MyModel", "my_model", "-x", "x" * 41, ""])
def test_a_name_that_cannot_be_a_pipeline_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match="pipeline name"):
        plan(name)
    assert not any(tmp_path.iterdir())


def test_an_existing_pipeline_of_the_project_is_not_overwritten() -> None:
    with pytest.raises(ScaffoldError, match=r"not overwriting .*pipelines/sweep\.yaml"):
        write(REPO, plan("sweep"))


def test_the_command_template_trains_resumes_and_leaves_its_model(tmp_path: Path) -> None:
    """The scaffolded program, run by hand under the command contract's environment."""
    write(tmp_path, plan("np-model", "command"))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DIGITS, data / DIGITS.name)
    env = {
        **os.environ,
        "SWEEPYARD_DATA": str(data),
        "SWEEPYARD_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "SWEEPYARD_METRICS": str(tmp_path / "metrics.jsonl"),
        "SWEEPYARD_MODEL_DIR": str(tmp_path / "model"),
    }
    (tmp_path / "ckpt").mkdir()
    program = tmp_path / "trainers" / "np_model" / "train.py"

    def run(steps: int) -> None:
        cmd = [sys.executable, str(program), "--lr", "0.3", "--steps", str(steps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr

    run(100)  # checkpoints at step 50 and 100; the next run resumes from 100
    run(120)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 121))
    assert lines[-1]["val_loss"] < 0.5 * lines[0]["val_loss"]  # it learned
    assert (tmp_path / "model" / "weights.npz").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["python", "command"])
def test_a_new_pipeline_runs_at_once(
    tmp_path: Path, kind: str, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`new`, then the sweep it wrote, compiled, validated and run locally: every trial done."""
    from pipelines.backends.local import run_workflow
    from pipelines.build.argo import build
    from pipelines.config import load_config
    from pipelines.validate import validate_or_raise

    root = tmp_path / "project"
    write(root, plan("newbie", kind))
    pythonpath = f"{root}{os.pathsep}{REPO}"  # the trainer's module, and the project's
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    cfg = load_config(root / "pipelines" / "newbie.yaml")
    doc = build(cfg).to_dict()
    validate_or_raise(doc, "newbie")
    shared = tmp_path / "shared"
    result = run_workflow(
        doc,
        run_dir=tmp_path / "run",
        shared_root=shared,
        env={
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            "PYTHONPATH": pythonpath,
        },
        cwd=root,
        progress=False,
    )
    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    sweep = shared / "sweepyard-shared" / "sweeps" / result.name
    results = [json.loads(p.read_text()) for p in sweep.glob("trials/*/result.json")]
    assert len(results) == (4 if kind == "python" else 3)
    assert all(r["status"] == "done" for r in results)
    assert all(r["objective"]["value"] < 1.0 for r in results)  # digits: they learned

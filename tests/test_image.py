"""The image, built here offline, runs the default sweep as pods would (RUNTIME=image).

`make image` builds the CPU target (reusing the cached base, wheelhouse and layers; from scratch on
a fresh machine, installing buildah and friends from Debian's packages as root). The small default
sweep then runs with every step inside the image, preemptions included, and its leaderboard equals
a process run's; a step that writes outside the shared disk and /tmp fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.leaderboard import load_trials
from pipelines.backends.local import RunResult, run_workflow
from pipelines.backends.local import cli as local_cli
from pipelines.backends.local.image import ImageRuntime, image_runtime
from pipelines.backends.mlflow_server import MlflowServer
from tests.conftest import REPO
from tests.support.local_sweep import CHAOS_SEED, CHAOS_WINDOW, manifest

pytestmark = pytest.mark.slow
TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "bwrap": "bubblewrap"}


@pytest.fixture(scope="module")
def image() -> Iterator[ImageRuntime]:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        assert os.geteuid() == 0, f"install {' '.join(missing)} (apt-get) to build the image"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing, "uidmap"], check=True, env=env)
    built = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    ref = built.stdout.strip().splitlines()[-1]
    assert ref == "localhost/sweepyard:cpu", "make image's last line is the image reference"
    with image_runtime(ref) as runtime:
        yield runtime


def sweep(tmp: Path, server: MlflowServer, **kw: Any) -> tuple[RunResult, dict[str, Any]]:
    shared = tmp / "shared"
    result = run_workflow(
        manifest(),
        run_dir=tmp / "run",
        shared_root=shared,
        env={"MLFLOW_TRACKING_URI": server.url},
        parameters={"sweep-id": "image-sweep"},
        cwd=REPO,
        progress=False,
        **kw,
    )
    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    rows = load_trials(shared / "sweepyard-shared", "image-sweep", "val_loss")
    assert len(rows) == 4 and all(r.status == "done" for r in rows)
    return result, {r.trial_id: r.metrics for r in rows}


def test_default_sweep_in_the_image_matches_the_process_run(
    image: ImageRuntime, tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    inside, in_image = sweep(
        tmp_path / "image",
        mlflow_server,
        image=image,
        chaos=0.5,
        seed=CHAOS_SEED,
        chaos_window=CHAOS_WINDOW,
    )
    _, as_processes = sweep(tmp_path / "process", mlflow_server)

    preempted = [a for n in inside.pods("train") for a in n.attempts if a.preempted]
    assert preempted, "the seed preempts train(0)'s first attempt inside the image"
    codes = {a.exit_code for a in preempted}
    # SIGTERM reaches the step inside the sandbox: it saves and exits 143 (or is killed, 137); a
    # signal that lands after the trial's last step lets it finish (0)
    assert codes & {143, 137} and codes <= {0, 143, 137}, codes
    assert in_image.keys() == as_processes.keys()
    for trial, metrics in as_processes.items():
        for name in ("val_loss", "val_accuracy", "train_loss"):
            assert in_image[trial][name] == pytest.approx(metrics[name], abs=1e-3), (trial, name)


def test_a_step_runs_as_the_image_user_and_writes_only_the_shared_disk_and_tmp(
    image: ImageRuntime, tmp_path: Path
) -> None:
    code = (
        "import os; print('uid', os.getuid(), 'gid', os.getgid(), flush=True); "
        "open('/mnt/shared/ok', 'w').write('shared'); open('/tmp/ok', 'w').write('tmp'); "
        "open(os.environ['TARGET'], 'w')"
    )
    for target in ("/home/sweepyard/x", "/opt/venv/x", "/etc/x"):
        doc = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "writes"},
            "spec": {
                "entrypoint": "main",
                "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "disk"}}],
                "templates": [
                    {
                        "name": "main",
                        "container": {
                            "image": image.ref,
                            "command": ["python", "-c", code],
                            "env": [{"name": "TARGET", "value": target}],
                            "volumeMounts": [{"name": "shared", "mountPath": "/mnt/shared"}],
                        },
                    }
                ],
            },
        }
        run = tmp_path / target.replace("/", "_")
        result = run_workflow(
            doc, run_dir=run, shared_root=run / "shared", progress=False, image=image
        )
        [step] = result.pods()
        log = step.attempts[0].log.read_text()
        assert step.phase == "Failed" and step.exit_code == 1, log
        assert "uid 10001 gid 10001" in log
        assert f"Read-only file system: '{target}'" in log
        assert (run / "shared" / "disk" / "ok").read_text() == "shared"


def test_an_image_not_built_is_a_clear_error_before_anything_runs(
    image: ImageRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SWEEPYARD_LOCAL_IMAGE", "localhost/sweepyard:never-built")
    code = local_cli.submit(
        manifest(), sweep_id=None, chaos=0.0, project_root=tmp_path, runtime="image"
    )
    assert code == 2
    assert "localhost/sweepyard:never-built is not built here: run `make image` first" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / ".sweepyard" / "runs").exists(), "nothing ran"

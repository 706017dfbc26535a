"""``make rerun BACKEND=argo``: the rerun goes to the cluster, the command waits on MLflow and compares.

The "cluster" is a loopback Argo Server that accepts the create request and runs the posted
Workflow with the local backend over the same shared disk and MLflow server, as the cluster's
controller would; the rerun command sees only the Argo API and MLflow, as it does against a real
cluster. The ``continue-from`` step (:mod:`components.runtime.continue_trial`) is checked on its
own too: its copy appears whole or not at all.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import provenance as pv
from components.contract import EXIT_GIVE_UP, trial_dir
from components.runtime import continue_trial
from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.rerun import wait_for_run
from tests.support.rerun import REPO, STEPS, Origin, steps_env


def _trial_with_state(shared: Path) -> Path:
    src = trial_dir(shared, "origin", "abc123def456")
    (src / "checkpoints" / "step-000000040").mkdir(parents=True)
    (src / "checkpoints" / "step-000000040" / "model.pt").write_bytes(b"weights")
    (src / "checkpoints" / "LATEST").write_text("step-000000040\n")
    (src / "work").mkdir()
    (src / "work" / "notes.txt").write_text("the program's own file")
    (src / "result.json").write_text("{}")  # the origin's result is not carried over
    return src


def test_continue_from_carries_checkpoints_and_work_over_whole_and_once(tmp_path: Path) -> None:
    _trial_with_state(tmp_path)
    carried = continue_trial.carry_over(tmp_path, "origin", "abc123def456", "rerun-1")
    assert carried == {"copied": ["checkpoints", "work"], "step": 40}
    dst = trial_dir(tmp_path, "rerun-1", "abc123def456")
    assert (dst / "checkpoints" / "step-000000040" / "model.pt").read_bytes() == b"weights"
    assert (dst / "work" / "notes.txt").read_text() == "the program's own file"
    assert not (dst / "result.json").exists()
    marker = json.loads((dst / "continued.json").read_text())  # what the trial's lineage records
    assert marker == {"sweep_id": "origin", "trial_id": "abc123def456", "step": 40}
    # a retried step finds the trial in place and changes nothing the trial may have written
    (dst / "checkpoints" / "LATEST").write_text("step-000000080\n")
    continue_trial.carry_over(tmp_path, "origin", "abc123def456", "rerun-1")
    assert (dst / "checkpoints" / "LATEST").read_text() == "step-000000080\n"


def test_a_copy_broken_half_way_leaves_no_trial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trial_with_state(tmp_path)
    real = shutil.copytree

    def copy_then_die(src: Path, dst: Path, *args: Any, **kw: Any) -> Any:
        if Path(src).name == "work":  # checkpoints/ is copied, then the disk fills
            raise OSError("disk full")
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(continue_trial.shutil, "copytree", copy_then_die)
    with pytest.raises(OSError):
        continue_trial.carry_over(tmp_path, "origin", "abc123def456", "rerun-2")
    trials = trial_dir(tmp_path, "rerun-2", "abc123def456").parent
    assert list(trials.iterdir()) == []  # no half-copied trial, no temporary left


def test_continue_from_without_state_gives_up_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path))
    argv = ["--from-sweep", "origin", "--trial", "abc123def456", "--to-sweep", "rerun-3"]
    assert continue_trial.main(argv) == EXIT_GIVE_UP
    err = capsys.readouterr().err
    assert "continue-from:" in err and "origin/trials/abc123def456 has no checkpoints" in err
    assert continue_trial.main([*argv[:3], "../x", *argv[4:]]) == EXIT_GIVE_UP


def test_waiting_for_a_cluster_rerun_ends_with_its_run_or_a_timeout(
    mlflow_server: MlflowServer,
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.create_experiment("rerun-wait")
    tags = {pv.TAG_SWEEP: "rerun-w", pv.TAG_TRIAL: "t1", pv.TAG_ROLE: "trial"}
    run = client.create_run(exp, tags=tags)
    assert wait_for_run(client, "rerun-wait", "rerun-w", "t1", timeout_s=0.3, poll_s=0.1) == (
        124,
        None,
    )
    client.set_terminated(run.info.run_id, "FAILED")
    assert wait_for_run(client, "rerun-wait", "rerun-w", "t1", 5.0, 0.1) == (1, run.info.run_id)


class FakeCluster:
    """An Argo Server that runs what it is sent with the local backend (see the module's doc)."""

    def __init__(self, origin: Origin):
        self.origin = origin
        self.posted: list[dict[str, Any]] = []
        self.runs: list[threading.Thread] = []
        self.codes: list[int] = []

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        workflow = body["workflow"]
        self.posted.append(workflow)
        params = {p["name"]: p.get("value") for p in workflow["spec"]["arguments"]["parameters"]}
        run = threading.Thread(target=self._run, args=(workflow, params["sweep-id"]), daemon=True)
        run.start()
        self.runs.append(run)
        return {**workflow, "metadata": {"name": "rerun-wf1", "namespace": "sweepyard"}}

    def _run(self, workflow: dict[str, Any], sweep_id: str) -> None:
        code = local_cli.submit(
            workflow, sweep_id=sweep_id, chaos=0.0, project_root=self.origin.root, progress=False
        )
        self.codes.append(code)


@pytest.fixture
def cluster(origin: Origin) -> Iterator[tuple[FakeCluster, str]]:
    fake = FakeCluster(origin)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(fake.create(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with steps_env(origin.uri, origin.lock):  # the cluster's steps log where the origin did
            yield fake, f"http://127.0.0.1:{server.server_address[1]}"
            for run in fake.runs:
                run.join(timeout=120)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def origin(rerun_origin: Origin) -> Origin:
    return rerun_origin


@pytest.mark.slow
def test_a_rerun_on_argo_continues_from_the_checkpoint_and_is_compared(
    origin: Origin, cluster: tuple[FakeCluster, str]
) -> None:
    fake, url = cluster
    ckpts = origin.shared / "sweeps" / "origin" / "trials" / origin.trial_id / "checkpoints"
    earliest = sorted(p.name for p in ckpts.glob("step-*"))[0]
    step = int(earliest.split("-")[1])
    assert step < STEPS, "the origin kept an earlier checkpoint than its last"
    (ckpts / "LATEST").write_text(earliest + "\n")  # as if the origin had stopped there
    argo = {"ARGO_SERVER": url, "ARGO_TOKEN": "t0ken", "ARGO_NAMESPACE": "sweepyard"}

    refused = origin.rerun("--backend", "kfp", "--from-checkpoint", KFP_HOST="http://127.0.0.1:9")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "BACKEND=kfp cannot rerun with --from-checkpoint" in refused.stderr

    proc = origin.rerun("--backend", "argo", "--from-checkpoint", **argo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (workflow,) = fake.posted  # the kfp attempt submitted nothing
    names = [t["name"] for t in workflow["spec"]["templates"]]
    assert "continue-from" in names
    fetch = next(t for t in workflow["spec"]["templates"] if t["name"] == "fetch")
    assert fetch["container"]["command"][-1] == "components.fetch"  # nothing drifted: no pin
    lines = proc.stdout.splitlines()
    assert "created workflow rerun-wf1 in namespace sweepyard" in proc.stdout
    new_run = lines[-1].split()[1].rstrip(":")
    assert f"  run {new_run}: FINISHED" in lines
    assert f"compared: the steps after {step}, the checkpoint's (the points up to it are replayed)" in lines, lines[-8:]  # fmt: skip
    assert f"train_loss: identical ({STEPS - step} steps)" in lines, lines[-6:]
    assert lines[-1] == f"rerun {new_run}: bitwise identical to {origin.run_id}"
    assert origin.client().get_run(new_run).data.tags[pv.TAG_ORIGIN] == origin.run_id
    assert "t0ken" not in proc.stdout + proc.stderr


def test_a_cluster_rerun_needs_the_mlflow_server_named(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "pipelines", "rerun", "--run", "r1", "--backend", "argo"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "BACKEND=argo: set MLFLOW_TRACKING_URI" in proc.stderr

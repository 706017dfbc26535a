"""Where a trial's seconds go: the spans of an attempt, in its log, ``attempts.jsonl`` and
``make status``; and the cuts they led to (the trial's MLflow client, its exit)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.runtime import lineage, mlflow_rest, tracking
from components.runtime.spans import Spans, format_spans, process_age
from components.runtime.tbevents import hparams_summaries
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.config import load_config
from tests.support.train import REPO, make_data, train_cmd, train_env, trial_params, trial_path

SUPERVISOR_SPANS = ("imports", "setup", "first_step", "train", "final_checkpoint", "model",
                    "flush", "end", "exit", "first_step_at")  # fmt: skip


def test_spans_add_up_by_name_in_order_and_print_in_one_line() -> None:
    spans = Spans(origin=time.monotonic() - 2.0)
    spans.add("imports", 1.25)
    with spans.span("setup"):
        time.sleep(0.01)
    spans.add("imports", 0.25)  # a name again: summed
    spans.count("mlflow_requests", 5)
    at = spans.mark("first_step")
    spans.mark("first_step")  # the first mark wins
    got = spans.as_dict()
    assert list(got) == ["imports", "setup", "first_step_at", "mlflow_requests"]
    assert format_spans(dict(sorted(got.items()))) == format_spans(got)  # (a record sorts keys)
    assert got["imports"] == 1.5 and 0.01 <= got["setup"] < 1.0
    assert 2.0 <= got["first_step_at"] == round(at, 3) < 3.0
    line = spans.line()
    assert line.startswith("imports 1.50s, setup 0.0")
    assert line.endswith(f"first_step_at {got['first_step_at']:.2f}s, mlflow_requests 5")
    assert format_spans({"z": 2.0, "a": 1.0, "b": "x", "c": True, "exit": 0.5}) == (
        "exit 0.50s, z 2.00s, a 1.00s"
    )


def test_time_zero_is_the_process_start() -> None:
    out = subprocess.run(
        [sys.executable, "-c",
         "import time; time.sleep(0.3); from components.runtime.spans import process_age; "
         "print(process_age())"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert 0.3 <= float(out) < 30.0
    assert process_age() > 0.0


def test_a_trial_logs_records_and_shows_its_spans(
    tmp_path: Path, mlflow_server: MlflowServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data, shared = make_data(tmp_path), tmp_path / "shared"
    params = trial_params(steps=60, eval_every=30, seed=7)
    env = train_env(shared, mlflow_server.url)
    proc = subprocess.run(train_cmd(params, data), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the log: one line at the end of the attempt
    (line,) = [ln for ln in proc.stderr.splitlines() if "spans: " in ln]
    assert line.split("spans: ", 1)[1].startswith("imports ")
    # attempts.jsonl: the end record keeps them (an optional field; the start record has none)
    tdir = trial_path(shared, params)
    records = [json.loads(r) for r in (tdir / "attempts.jsonl").read_text().splitlines()]
    assert "spans" not in records[0]
    spans = records[-1]["spans"]
    assert records[-1]["event"] == "end" and set(SUPERVISOR_SPANS) <= set(spans)
    assert {"data", "hparams", "mlflow"} <= set(spans)  # the trainer's own, the sender's
    assert all(isinstance(v, float) and v >= 0 for k, v in spans.items() if k != "mlflow_requests")
    assert spans["first_step_at"] >= spans["imports"] + spans["setup"]
    assert line.split("spans: ", 1)[1] == format_spans(spans)
    # the run found or created in a few requests, without mlflow: the experiment (created), the
    # parent (searched, created), the trial's run (searched, created), its dataset, its params
    # and lineage in one batch (a trial whose parent exists: 6; a retry: 2 or 3)
    assert 1 <= spans["mlflow_requests"] <= 8
    # make status: one line per trial with its last attempt's spans
    from pipelines.backends.local.status import status

    run = tmp_path / ".sweepyard" / "runs" / "sweep-x1"
    run.mkdir(parents=True)
    node = {"name": "train(0)", "type": "Pod", "phase": "Succeeded", "attempts": [{}],
            "inputs": {"trial-id": tdir.name}}  # fmt: skip
    doc = {"name": "sweep-x1", "pipeline": "sweep", "sweep_id": "s1", "status": "Succeeded",
           "started": time.time() - 60, "volumes": {"shared": str(shared)}, "nodes": [node]}  # fmt: skip
    (run / "run.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert status(cfg=load_config(REPO / "pipelines" / "sweep.yaml"), project_root=tmp_path) == 0
    out = capsys.readouterr().out
    assert f"  {tdir.name}: {format_spans(spans)}" in out.splitlines()


def test_the_trial_tracks_without_importing_mlflow(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """The trial's client speaks MLflow's REST API itself (mlflow's import costs ~1.5 s of CPU)."""
    assert isinstance(tracking.trial_client(mlflow_server.url), mlflow_rest.RestClient)
    sqlite = f"sqlite:///{tmp_path}/db.sqlite"
    assert not isinstance(tracking.trial_client(sqlite), mlflow_rest.RestClient)
    insecure = {"MLFLOW_TRACKING_INSECURE_TLS": "true"}
    assert not isinstance(tracking.trial_client("https://x", insecure), mlflow_rest.RestClient)
    probe = (
        "import sys; from components.runtime import lineage, sender, trial_run, tracking; "
        "c = tracking.trial_client(sys.argv[1]); "
        "print(c.get_experiment_by_name('nope'), 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe, mlflow_server.url], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.split() == ["None", "False"]


def test_the_rest_clients_run_and_dataset_match_mlflows(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    rest, client = tracking.trial_client(mlflow_server.url), tracking.client(mlflow_server.url)
    run, created = tracking.open_trial_run(
        "spans", "t1", mlflow_client=rest, experiment="spans-exp", tags={"a": "1"}
    )
    assert created and run.data.params == {} and tracking.latest_steps(run) == {}
    run_id = run.info.run_id
    data = {"dataset": "digits", "hash": "h1", "path": str(tmp_path)}
    rest.log_inputs(run_id, [lineage.dataset_input_rest(data)])
    tracking.log_batch(rest, run_id, metrics=[("loss", 0.5, 1000, 3)], params={"lr": 0.1},
                       tags={"b": "2"})  # fmt: skip
    again, created = tracking.open_trial_run(
        "spans", "t1", mlflow_client=rest, experiment="spans-exp"
    )
    assert not created and again.info.run_id == run_id
    assert tracking.latest_steps(again) == {"loss": 3} == tracking.logged_steps(client, run_id)
    seen = client.get_run(run_id)
    assert seen.data.params == {"lr": "0.1"} and {"a", "b"} <= set(seen.data.tags)
    (got,) = [d.dataset for d in seen.inputs.dataset_inputs]
    want = lineage.dataset_input(data).dataset
    assert (got.name, got.digest, got.source_type, got.source) == (
        want.name, want.digest, want.source_type, want.source,
    )  # fmt: skip
    nohash = lineage.dataset_input_rest({**data, "hash": ""})["dataset"]
    assert nohash["digest"] == lineage.dataset_input({**data, "hash": ""}).dataset.digest
    rest.set_terminated(run_id, "FINISHED")
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(mlflow_rest.RestError) as err:
        rest.get_run("0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_hparams_are_written_as_torchs_writer_writes_them() -> None:
    from torch.utils.tensorboard.summary import hparams

    h = {"lr": 0.1, "hidden": 32, "name": "x", "flag": True, "trial_id": "abc"}
    m = {"val_loss": 0.2, "val_accuracy": 0.9}
    ours, torchs = hparams_summaries(h, m), hparams(h, m)
    assert [s.SerializeToString() for s in ours] == [s.SerializeToString() for s in torchs]


def test_the_supervisor_leaves_without_the_interpreters_teardown_but_runs_atexit(
    tmp_path: Path,
) -> None:
    code = (
        "import atexit, threading, time; from components.train import leave; "
        "atexit.register(lambda: print('atexit ran', flush=False)); "
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start(); "
        "print('buffered', end=' '); leave(7)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 7
    assert proc.stdout.split() == ["buffered", "thread", "done", "atexit", "ran"]

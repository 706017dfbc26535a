"""A trial's lineage and ``make rerun`` (issue 27), against a real MLflow server.

One local sweep of one trial of the reference trainer (CPU, 3000 steps: a few seconds, so it
keeps a checkpoint before its last at a 1 s interval) is the origin; then
``python -m pipelines rerun`` runs it again (bitwise identical histories), refuses a changed commit,
lock or dataset naming what changed, and with ``--allow-drift`` runs anyway and tags the drift.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from components import provenance as pv
from components.contract import LINEAGE_FILE, canonical_json, trial_id
from components.plan import make_plan
from components.space import SearchSpace
from pipelines import drift
from pipelines.cli import pipeline_names
from pipelines.config import load_config
from pipelines.rerun import Origin as RerunOrigin
from pipelines.rerun import RerunPlan, compare_metric, rerun_config, rerun_manifest
from tests.conftest import REPO
from tests.support.rerun import DIGITS, EVAL_EVERY, PARAMS, STEPS, Origin

SCREENSHOTS = REPO / ".sweepyard" / "screenshots"


@pytest.fixture
def origin(rerun_origin: Origin) -> Origin:
    return rerun_origin


@pytest.fixture
def changed_data(origin: Origin) -> Iterator[str]:
    """The source holds other digits (the first 1000 rows): another content hash. Restored after."""
    with gzip.open(DIGITS, "rt") as f:
        rows = f.read().splitlines()[:1000]
    with gzip.open(origin.source, "wt") as f:
        f.write("\n".join(rows) + "\n")
    try:
        yield pv.file_sha256(origin.source)
    finally:
        shutil.copy(DIGITS, origin.source)


def reruns(origin: Origin) -> list[Path]:
    return sorted((origin.shared / "sweeps").glob("rerun-*"))


@pytest.mark.slow
def test_a_trial_records_its_lineage_on_its_run_and_in_lineage_json(origin: Origin) -> None:
    run = origin.client().get_run(origin.run_id)
    tags = run.data.tags
    lineage = json.loads((origin.shared / "sweeps/origin/trials" / origin.trial_id / LINEAGE_FILE).read_text())  # fmt: skip
    # what the runs page's Source column shows
    assert tags["mlflow.source.git.commit"] == "abc123"
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.source.name"] == "abc123 rerun"  # the commit, then the pipeline
    # the dataset as a dataset input: its content hash is the digest (the Dataset column)
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    data_hash = tags[pv.TAG_DATA_HASH]
    assert (dataset.digest, dataset.name, dataset.source_type) == (data_hash, "digits", "local")
    folder = origin.shared / "data" / "digits" / data_hash
    assert json.loads(dataset.source) == {"uri": str(folder)}
    assert (folder / ".complete").exists()
    # the rest of the lineage, as tags and in lineage.json alike
    assert tags[pv.TAG_LOCK] == lineage["lock"]["sha256"] == pv.file_sha256(origin.lock)
    assert tags[pv.TAG_DIRTY] == "false" and lineage["code"]["git_commit"] == "abc123"
    assert json.loads(tags[pv.TAG_PARAMS]) == lineage["params"] == {"lr": 0.01, **PARAMS}
    assert tags[pv.TAG_SEED] == "0" and lineage["seed"] == 0
    assert tags[pv.TAG_PIPELINE] == "rerun" and tags[pv.TAG_IMAGE] == lineage["image"]["reference"]  # fmt: skip
    assert lineage["data"] == {
        "dataset": "digits", "hash": data_hash, "path": str(folder),
        "source": str(origin.source.parent), "kind": "file",
    }  # fmt: skip
    assert tags[pv.TAG_TORCH].startswith("2.") and tags[pv.TAG_DEVICE].startswith("cpu: ")
    assert lineage["environment"]["torch"] == tags[pv.TAG_TORCH]
    # the trial spec: the config's train arguments, the same hash the pipeline computes now
    spec = drift.spec_args(load_config(origin.config))
    assert tags[pv.TAG_SPEC_HASH] == lineage["trial_spec"]["sha256"] == pv.trial_spec_hash(spec)
    assert lineage["trial_spec"]["args"] == spec and "--trial-id" not in spec
    assert origin.uri not in json.dumps(lineage)  # no environment dump


@pytest.mark.slow
def test_a_rerun_is_bitwise_identical_and_says_so(origin: Origin) -> None:
    proc = origin.rerun()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert f"train_loss: identical ({STEPS} steps)" in lines
    assert "val_loss: identical (3 steps)" in lines and "val_accuracy: identical (3 steps)" in lines
    new_run = lines[-1].split()[1].rstrip(":")
    assert lines[-1] == f"rerun {new_run}: bitwise identical to {origin.run_id}"
    client = origin.client()
    new = client.get_run(new_run)
    assert new.data.tags[pv.TAG_ORIGIN] == origin.run_id
    assert not [k for k in new.data.tags if k.startswith(pv.DRIFT_TAG_PREFIX)]
    assert new.data.tags[pv.TAG_TRIAL] == origin.trial_id
    assert new.data.tags[pv.TAG_SWEEP].startswith(f"rerun-{origin.trial_id}-")
    for key in ("train_loss", "val_loss", "val_accuracy"):  # the histories themselves
        before = [(m.step, m.value) for m in client.get_metric_history(origin.run_id, key)]
        after = [(m.step, m.value) for m in client.get_metric_history(new_run, key)]
        assert sorted(before) == sorted(after) and before
    (dataset,) = [d.dataset for d in new.inputs.dataset_inputs]
    assert dataset.digest == origin.client().get_run(origin.run_id).data.tags[pv.TAG_DATA_HASH]


@pytest.mark.slow
def test_a_changed_commit_or_lock_is_refused_by_name(origin: Origin, tmp_path: Path) -> None:
    before = reruns(origin)
    proc = origin.rerun(SWEEPYARD_GIT_COMMIT="def456")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "commit: recorded abc123 (clean), now def456 (clean)" in proc.stderr.splitlines()
    assert "lock:" not in proc.stderr and "data:" not in proc.stderr

    other = tmp_path / "requirements.lock"
    other.write_text(origin.lock.read_text() + "extra-package==1.0\n")
    proc = origin.rerun(SWEEPYARD_LOCK_FILE=str(other))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    recorded, now = pv.file_sha256(origin.lock)[:12], pv.file_sha256(other)[:12]
    assert f"lock: recorded {recorded}, now {now} ({other})" in proc.stderr.splitlines()
    assert "commit:" not in proc.stderr
    assert reruns(origin) == before  # nothing ran


@pytest.mark.slow
def test_changed_data_is_refused_and_an_allowed_drift_is_tagged(
    origin: Origin, changed_data: str
) -> None:
    recorded = origin.client().get_run(origin.run_id).data.tags[pv.TAG_DATA_HASH]
    proc = origin.rerun()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("data: ")]
    assert line.startswith(f"data: recorded digits/{recorded}, now digits/")
    assert f"from {origin.source.parent}" in line and recorded not in line.split(", now ")[1]
    assert line.endswith("the recorded version is still on the shared disk: the rerun reads it")

    proc = origin.rerun("--allow-drift", SWEEPYARD_GIT_COMMIT="def456")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"drift allowed: {line}" in proc.stdout.splitlines()
    new_run = proc.stdout.splitlines()[-1].split()[1].rstrip(":")
    tags = origin.client().get_run(new_run).data.tags
    assert tags[pv.TAG_ORIGIN] == origin.run_id
    assert tags["sweepyard.drift.data"] == line[len("data: ") :]
    assert tags["sweepyard.drift.commit"] == "recorded abc123 (clean), now def456 (clean)"
    assert tags[pv.TAG_COMMIT] == "def456"
    # the recorded version was still complete on the shared disk: the rerun read it, and matches
    assert tags[pv.TAG_DATA_HASH] == recorded
    assert proc.stdout.splitlines()[-1] == f"rerun {new_run}: bitwise identical to {origin.run_id}"


@pytest.mark.slow
def test_the_runs_page_shows_the_dataset_and_source_columns(origin: Origin) -> None:
    from tests.support.browser import browser, chromium

    if chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    exp = origin.client().get_experiment_by_name("rerun")
    assert exp is not None
    trials = quote(f"tags.`{pv.TAG_ROLE}` = 'trial'", safe="")  # every trial run, not folded
    url = f"{origin.uri}/#/experiments/{exp.experiment_id}/runs?searchFilter={trials}"
    with browser() as page:
        page.open(f"{url}&orderByKey={quote('metrics.`val_loss`', safe='')}&orderByAsc=true")
        text = page.wait_for("Dataset", "Source", "digits", "Training", origin.trial_id, "abc123")
        digest = origin.client().get_run(origin.run_id).data.tags[pv.TAG_DATA_HASH]
        assert f"digits ( {digest} )" in " ".join(text.split())
        page.js("document.querySelectorAll('button[aria-label=\"Close\"]').forEach(b => b.click())")
        time.sleep(1.0)  # the assistant's panel closes: the table takes the width
        page.screenshot(SCREENSHOTS / "rerun-runs-page.png")


@pytest.mark.slow
def test_a_rerun_from_a_checkpoint_continues_the_trial_and_matches_it(origin: Origin) -> None:
    ckpts = origin.shared / "sweeps" / "origin" / "trials" / origin.trial_id / "checkpoints"
    earliest = sorted(p.name for p in ckpts.glob("step-*"))[0]
    step = int(earliest.split("-")[1])
    assert step < STEPS, "the origin kept an earlier checkpoint than its last"
    latest = (ckpts / "LATEST").read_text()
    (ckpts / "LATEST").write_text(earliest + "\n")  # as if the origin had stopped there
    try:
        proc = origin.rerun("--trial", origin.trial_id, "--sweep-id", "origin", "--from-checkpoint")
    finally:
        (ckpts / "LATEST").write_text(latest)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(x.startswith("continuing from the origin's checkpoints/") for x in lines)
    new_run = lines[-1].split()[1].rstrip(":")
    logs = (origin.root / ".sweepyard" / "runs").glob("*/logs/train(0)-0.log")
    assert any(f"resuming from checkpoint {earliest}" in log.read_text() for log in logs)
    assert f"train_loss: identical ({STEPS - step} steps)" in lines, lines[-6:]
    evals = len([s for s in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY) if s > step])
    assert f"val_loss: identical ({evals} steps)" in lines
    assert lines[-1] == f"rerun {new_run}: bitwise identical to {origin.run_id}"
    trained = {m.step for m in origin.client().get_metric_history(new_run, "train_loss")}
    assert set(range(step + 1, STEPS + 1)) <= trained  # trained again from the checkpoint on


def test_the_trial_spec_leaves_out_only_the_trial_specific_arguments() -> None:
    common = ["--objective", "val_loss", "--threads", "2", "--trainer-function", "m:f"]
    one = ["--sweep-id", "s", "--trial-id", "t", "--params", "{}", "--data=/d", "--data-hash", "h"]
    other = ["--trial-id", "u", "--params", '{"lr": 1}', "--data", "/e", "--sweep-id", "z"]
    assert pv.trial_spec_args([*one, *common]) == common == pv.trial_spec_args([*other, *common])
    assert pv.trial_spec_hash([*one, *common]) == pv.trial_spec_hash([*other, *common])
    assert pv.trial_spec_hash(common) != pv.trial_spec_hash([*common[:3], "3", *common[4:]])


def test_histories_are_compared_step_by_step_bit_for_bit() -> None:
    same = {1: 0.5, 2: 0.25}
    assert compare_metric("loss", same, dict(same)) == ("loss: identical (2 steps)", True)
    line, ok = compare_metric("loss", {1: 0.5, 40: 0.25}, {1: 0.5, 40: 0.25 + 3.1e-07})
    assert (line, ok) == ("loss: differs: largest difference 3.1e-07 at step 40", False)
    line, _ = compare_metric("loss", {1: 0.5, 2: 0.25, 3: 0.1}, {3: 0.1})
    assert line == "loss: differs: the 1 step both have is identical; 2 steps missing in the rerun (steps 1..2)"  # fmt: skip
    assert compare_metric("x", {1: float("nan")}, {1: float("nan")})[1]
    assert not compare_metric("x", {1: 0.0}, {1: -0.0})[1]  # bitwise, not ==


@pytest.mark.parametrize("name", pipeline_names())
def test_every_pipeline_reruns_as_a_plan_of_exactly_the_origin_trial(name: str) -> None:
    cfg = load_config(name)
    params = cfg.search.space.expand()[0]  # (adaptive spaces: one draw)
    origin = RerunOrigin("run", "exp", "s", trial_id(params), name, params, {})
    data = drift.RecordedData("digits", "0123456789abcdef", "", True) if cfg.data else None
    plan = RerunPlan(origin, "rerun-x", pin=data, continue_from="s")
    manifest = rerun_manifest(rerun_config(cfg, origin, data), plan)  # validated, as on submit
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    # --from-checkpoint: the origin's state is carried over before train starts
    carry = templates["continue-from"]["container"]
    assert carry["command"][-1] == "components.runtime.continue_trial"
    assert carry["args"] == ["--from-sweep", "s", "--trial", trial_id(params), "--to-sweep", "{{workflow.parameters.sweep-id}}"]  # fmt: skip
    dag = templates[manifest["spec"]["entrypoint"]]["dag"]["tasks"]
    assert next(t for t in dag if t["name"] == "train")["depends"].endswith("&& continue-from")
    args = templates["plan"]["container"]["args"]
    space = SearchSpace.model_validate_json(args[args.index("--space") + 1])
    trials, _ = make_plan(space, max_trials=1)
    assert trials == [{"id": trial_id(params), "params": canonical_json(params)}]
    if data is not None:  # the recorded version, pinned
        fetch = templates["fetch"]["container"]
        assert fetch["args"] == ["pin", "--dataset", "digits", "--hash", "0123456789abcdef"]
    train = templates["train"]
    if "resource" in train:  # a multi-node trial: the container of the JobSet's pod
        from pipelines.validate.crds import parse_manifest

        jobset = parse_manifest(train["resource"]["manifest"])
        container = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]  # fmt: skip
    else:
        container = train["container"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_EXPERIMENT_NAME"] == "exp"
    assert "--pruner" not in container["args"]  # a study of one trial

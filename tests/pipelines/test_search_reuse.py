"""Worker reuse (``search.trials_per_pod``): the config checks, the compiled round, the pods' queue
on the shared disk, and an adaptive sweep whose pods run several trials each on the local backend,
one of them preempted mid-trial."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.search.pod_queue import Queue, RoundItem, pod_items, slot_trials
from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build
from pipelines.build.kfp import KfpUnsupported, unsupported
from pipelines.build.kfp import build as kfp_build
from pipelines.config import ConfigError, parse_config
from pipelines.validate import validate_or_raise
from tests.support.sweep_compiled import templates

CONFIG = Path(__file__).parents[1] / "configs" / "tpe_reuse.yaml"
GRID = Path(__file__).parents[2] / "pipelines" / "sweep.yaml"


def raw(path: Path = CONFIG) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_trials_per_pod_needs_an_adaptive_algorithm() -> None:
    doc = raw(GRID)
    doc["search"]["trials_per_pod"] = 2
    with pytest.raises(ConfigError, match=r"search\.trials_per_pod.*adaptive"):
        parse_config(doc, source="grid.yaml")
    doc = raw()
    doc["search"]["trials_per_pod"] = 0
    with pytest.raises(ConfigError, match=r"search\.trials_per_pod"):
        parse_config(doc, source="tpe.yaml")


def test_a_round_asks_parallelism_times_k_and_fans_out_over_pods() -> None:
    cfg = parse_config(raw(), source=str(CONFIG))
    assert cfg.batch == 6  # parallelism 2 x 3 trials per pod
    doc = build(cfg).to_dict()
    validate_or_raise(doc, str(CONFIG))
    t = templates(doc)
    args = t["train"]["container"]["args"]
    assert "--trial-id" not in args and "--params" not in args
    assert args[args.index("--pod-trials") + 1] == "{{inputs.parameters.params}}"
    search = json.loads(t["suggest"]["container"]["args"][3])
    assert search["trials_per_pod"] == 3 and search["batch"] == 6
    # three trials' preemptions, one trial's application errors (each retry resumes them all)
    r = cfg.retries
    assert t["train"]["retryStrategy"]["limit"] == 3 * r.preemptions + r.app_errors


def test_kfp_refuses_trials_per_pod_by_name() -> None:
    cfg = parse_config(raw(), source=str(CONFIG))
    assert "search.trials_per_pod is 3" in (unsupported(cfg) or "")
    with pytest.raises(KfpUnsupported, match=r"search\.trials_per_pod"):
        kfp_build(cfg)


def test_pods_claim_each_trial_once_and_resume_their_own(tmp_path: Path) -> None:
    trials = [{"id": f"t{i}", "params": json.dumps({"i": i})} for i in range(5)]
    items = pod_items(trials, 2, "wf")
    assert len(items) == 3 and len({i["id"] for i in items}) == 3  # ceil(5 / 2) pods
    pods = [RoundItem.from_json(i["params"]) for i in items]
    assert [p.order()[0][0] for p in pods] == ["t0", "t1", "t2"]  # each starts on its own share
    queue = Queue(tmp_path, "s", pods[0].queue)
    assert queue.claim("t0", 0) and not queue.claim("t0", 1)
    queue.revisit("t0", 0)
    assert queue.visits("t0") == [0, 0] and queue.owner("t0") == 0 and queue.owner("t1") is None
    assert queue.claim("t3", 0) and queue.claim("t1", 1)
    # make status: a pod's row becomes a row per trial its slot claimed
    assert slot_trials([tmp_path], "s", items[0]["params"]) == ["t0", "t3"]
    assert slot_trials([tmp_path], "s", items[2]["params"]) == []
    assert slot_trials([tmp_path], "s", '{"lr": 0.1}') == []
    assert pod_items(trials, 2, "another-workflow")[0]["id"] != items[0]["id"]
    assert pod_items([], 2, "wf") == []


# --------------------------------------------------------------------------- end to end


def _pod_pid(queue: str, slot: int) -> int | None:
    """The process of the train pod of ``queue``'s ``slot`` (its ``--pod-trials`` argument)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "components.train" not in argv or "--pod-trials" not in argv:
            continue
        item = json.loads(argv[argv.index("--pod-trials") + 1])
        if item["queue"] == queue and item["slot"] == slot:
            return int(proc.name)
    return None


EARLY_CHECKPOINT = re.compile(r"step-0*(\d{1,3}|1[0-2]\d\d)")  # step <= 1299: 700+ before rung


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class Preempter(threading.Thread):
    """SIGTERMs the first pod seen running a trial that is not its first (a batch-mate of its slot
    has a result) and has a checkpoint well before ASHA's rung at step 2000 (so the trial is
    still running when the signal lands): ``target`` is that trial, ``mates`` the finished ones."""

    def __init__(self, sweep: Path) -> None:
        super().__init__(daemon=True)
        self.sweep, self.done = sweep, threading.Event()
        self.target: str | None = None
        self.mates: list[str] = []

    def _slot(self, claim: Path) -> int | None:
        lines = claim.read_text().splitlines()
        return json.loads(lines[0])["slot"] if len(lines) == 1 else None

    def run(self) -> None:
        while not self.done.is_set() and self.target is None:
            for claim in sorted(self.sweep.glob("queues/*/*.claim")):
                tdir = self.sweep / "trials" / claim.stem
                slot = self._slot(claim)
                if slot is None or (tdir / "result.json").exists():
                    continue
                if not EARLY_CHECKPOINT.fullmatch(_read(tdir / "checkpoints" / "LATEST")):
                    continue  # none yet, or too near the rung: the SIGTERM could land after it
                mates = [
                    c.stem for c in claim.parent.glob("*.claim")
                    if c != claim and self._slot(c) == slot
                    and (self.sweep / "trials" / c.stem / "result.json").exists()
                ]  # fmt: skip
                pid = _pod_pid(claim.parent.name, slot) if mates else None
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                    self.target, self.mates = claim.stem, mates
                    return
            time.sleep(0.02)


@pytest.mark.slow
def test_pods_run_several_trials_and_a_preempted_pod_resumes_only_its_trial(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("SWEEPYARD_SHARED", raising=False)
    doc = build(parse_config(raw(), source=str(CONFIG))).to_dict()
    validate_or_raise(doc, str(CONFIG))
    sweep = tmp_path / ".sweepyard" / "shared" / "sweepyard-shared" / "sweeps" / "reuse"
    preempter = Preempter(sweep)
    preempter.start()
    try:
        rc = local_cli.submit(
            doc, chaos=0.0, project_root=tmp_path, progress=True, sweep_id="reuse"
        )
    finally:
        preempter.done.set()
    assert rc == 0
    out = capsys.readouterr().out  # the progress lines name a pod's trials, not its slot
    assert re.search(
        r"round\.train\(\d\) +Succeeded attempt \d trial [0-9a-f]{12}, [0-9a-f]{12}", out
    )

    results = _assert_every_trial_has_its_result_and_run(sweep, mlflow_server.url)
    train = _assert_a_pod_per_three_trials_of_a_round(tmp_path)
    logs = {n["name"]: [Path(a["log"]).read_text() for a in n["attempts"]] for n in train}
    _assert_a_pruned_trial_is_followed_in_its_pod(logs, results)
    _assert_only_the_preempted_trial_resumed(sweep, preempter, train, logs, results)
    client = MlflowClient(mlflow_server.url)
    target = str(preempter.target)
    steps = [m.step for m in client.get_metric_history(results[target]["run_id"], "train_loss")]
    assert sorted(steps) == list(range(1, results[target]["steps_run"] + 1))


def _assert_every_trial_has_its_result_and_run(sweep: Path, uri: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    plan = [t["id"] for t in json.loads((sweep / "plan.json").read_text())]
    results = {t: json.loads((sweep / "trials" / t / "result.json").read_text()) for t in plan}
    assert len(results) == 12 and {r["status"] for r in results.values()} <= {"done", "pruned"}
    client = MlflowClient(uri)
    run_ids = {r["run_id"] for r in results.values()}
    assert len(run_ids) == 12 and None not in run_ids
    for t, r in results.items():
        assert client.get_run(r["run_id"]).data.tags["sweepyard.trial_id"] == t
    return results


def _assert_a_pod_per_three_trials_of_a_round(tmp_path: Path) -> list[dict[str, Any]]:
    """Pods: ceil(trials of the round / 3) per round; the train pods returned."""
    (run_dir,) = (tmp_path / ".sweepyard" / "runs").iterdir()
    nodes = json.loads((run_dir / "run.json").read_text())["nodes"]
    rounds = [
        json.loads(n["outputs"]["trials"])
        for n in nodes
        if n["template"] == "suggest" and n["type"] == "Pod"
    ]
    sizes = [len(RoundItem.from_json(items[0]["params"]).trials) for items in rounds if items]
    assert sum(sizes) == 12 and all(len(items) == math.ceil(n / 3) for items, n in
                                    zip([r for r in rounds if r], sizes, strict=True))  # fmt: skip
    train = [n for n in nodes if n["template"] == "train" and n["type"] == "Pod"]
    assert len(train) == sum(math.ceil(n / 3) for n in sizes) == 4
    return train


def _assert_a_pruned_trial_is_followed_in_its_pod(
    logs: dict[str, list[str]], results: dict[str, Any]
) -> None:
    followed = 0
    for texts in logs.values():
        ran = re.findall(r"trial (\S+) exited 0\n.*?trial \d+ of this pod: (\S+)", texts[0], re.S)
        followed += sum(results[t]["status"] == "pruned" for t, _ in ran)
    assert followed >= 1


def _assert_only_the_preempted_trial_resumed(
    sweep: Path,
    preempter: Preempter,
    train: list[dict[str, Any]],
    logs: dict[str, list[str]],
    results: dict[str, Any],
) -> None:
    """The preempted pod: only the interrupted trial resumed, nothing finished rerun."""
    target = preempter.target
    assert target is not None, "no pod was preempted while running its second trial"
    (node,) = [n for n in train if any(target in log for log in logs[n["name"]])]
    assert len(node["attempts"]) == 2 and node["attempts"][0]["exit_code"] == 143
    retry = logs[node["name"]][1]
    assert (
        re.search(rf"trial 1 of this pod: {target}", retry) and "resuming from checkpoint" in retry
    )
    for mate in preempter.mates:
        assert f": {mate} (visit" not in retry  # a finished batch-mate is not run again
    for t in results:
        records = [json.loads(x) for x in (sweep / "trials" / t / "attempts.jsonl").open()]
        starts = [r for r in records if r["event"] == "start"]
        ends = [r for r in records if r["event"] == "end"]
        if t == target:
            assert [e["outcome"] for e in ends] == ["preempted", results[t]["status"]]
            assert [s["lost"] for s in starts] == [0, 0]
        else:
            assert len(starts) == 1 and len(ends) == 1, t
    assert results[target]["preemptions"] == 1 and results[target]["attempts"] == 2


# --------------------------------------------------------------------------- a pod's attempts


class FakeTrials:
    """Stands in for ``components.train.main``: each trial's exit code from ``script`` (default
    0), ``result.json`` written as the supervisor would (done; failed on 3; none on 1 or 143)."""

    def __init__(self, shared: Path, script: dict[str, int]) -> None:
        self.shared, self.script = shared, script
        self.calls: list[tuple[str, str]] = []  # (trial id, SWEEPYARD_ATTEMPT)

    def __call__(self, argv: Any) -> int:
        argv = list(argv)
        tid = argv[argv.index("--trial-id") + 1]
        self.calls.append((tid, os.environ.get("SWEEPYARD_ATTEMPT", "")))
        code = self.script.pop(tid, 0)
        status = {0: "done", 3: "failed"}.get(code)
        if status is not None:
            tdir = self.shared / "sweeps" / "s" / "trials" / tid
            tdir.mkdir(parents=True, exist_ok=True)
            (tdir / "result.json").write_text(json.dumps({"status": status}))
        return code


def _pod(tmp_path: Path, fake: FakeTrials, k: int = 3) -> int:
    from components.runtime import pod_trials

    trials = [{"id": t, "params": json.dumps({"t": t})} for t in ("a", "b", "c")]
    item = pod_items(trials, k, "wf")[0]["params"]
    return pod_trials.run(item, ["--sweep-id", "s", "--objective", "val_loss"], trial=fake)


@pytest.fixture
def pod_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWEEPYARD_SHARED", str(tmp_path))
    monkeypatch.setenv("SWEEPYARD_ATTEMPT", "0")
    return tmp_path


def test_an_app_error_keeps_the_batch_mates_and_the_retry_resumes_only_that_trial(
    pod_env: Path,
) -> None:
    fake = FakeTrials(pod_env, {"b": 1})
    assert _pod(pod_env, fake) == 1  # b to retry; a and c ran all the same
    assert fake.calls == [("a", "0"), ("b", "0"), ("c", "0")]
    fake.calls.clear()
    assert _pod(pod_env, fake) == 0  # the pod's retry: b alone, as its own retry 1
    assert fake.calls == [("b", "1")]


def test_a_preempted_trial_stops_the_pod_and_its_retry_resumes_it_first(pod_env: Path) -> None:
    fake = FakeTrials(pod_env, {"b": 143})
    assert _pod(pod_env, fake) == 143
    assert [t for t, _ in fake.calls] == ["a", "b"]  # c not claimed: another pod may take it
    fake.calls.clear()
    assert _pod(pod_env, fake) == 0
    assert fake.calls == [("b", "1"), ("c", "0")]


def test_a_trial_that_gave_up_is_not_rerun_and_the_pod_says_so(pod_env: Path) -> None:
    fake = FakeTrials(pod_env, {"a": 3, "c": 1})
    assert _pod(pod_env, fake) == 1  # c is retried: the retry code wins over give-up
    fake.calls.clear()
    assert _pod(pod_env, fake) == 3  # the retry: c done, a not rerun, still failed
    assert fake.calls == [("c", "1")]


def test_sigterm_between_trials_starts_no_new_trial(pod_env: Path) -> None:
    from components.runtime.trial import StopSignal

    previous = signal.getsignal(signal.SIGTERM)

    def stopping(argv: Any) -> int:  # the trial's supervisor installs its handler; SIGTERM lands
        code = fake(argv)
        StopSignal().install().request()
        return code

    fake = FakeTrials(pod_env, {})
    try:
        assert _pod(pod_env, stopping) == 143  # type: ignore[arg-type]
        assert [t for t, _ in fake.calls] == ["a"]
        fresh = StopSignal().install()  # the next trial's handler takes the stop over
        assert fresh.requested
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)

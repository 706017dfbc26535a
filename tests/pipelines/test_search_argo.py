"""The adaptive search on the Argo path: the recursive ``round`` template compiles flat, validates,
and runs end to end on the local backend (preemptions injected), a resubmit continuing the study."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends.local import cli as local_cli
from pipelines.backends.mlflow_server import MlflowServer
from pipelines.build.argo import build
from pipelines.cli import COMPILED, dump_yaml, manifests
from pipelines.config import load_config, parse_config
from pipelines.validate import validate_or_raise
from tests.conftest import REPO
from tests.support.local_sweep import preemptions_ended_as_kills
from tests.support.sweep_compiled import templates

SMALL = Path(__file__).parents[1] / "configs" / "kfp_tpe.yaml"


def test_the_tpe_golden_files_match_and_validate() -> None:
    for name, doc in manifests(load_config("tpe")).items():
        assert (COMPILED / name).read_text() == dump_yaml(doc), f"{name} is stale: make compile"
    doc = yaml.safe_load((COMPILED / "tpe.yaml").read_text())
    validate_or_raise(doc, "tpe.yaml")


def test_rounds_recurse_suggest_then_train_then_the_next_round_while_more() -> None:
    doc = yaml.safe_load((COMPILED / "tpe.yaml").read_text())
    t = templates(doc)
    assert "plan" not in t and {"suggest", "round", "train", "fetch", "compare"} <= set(t)
    main = {task["name"]: task for task in t["main"]["dag"]["tasks"]}
    assert main["round"]["template"] == "round" and main["round"]["depends"] == "fetch"
    assert main["compare"]["depends"] == "round.Succeeded || round.Failed || round.Errored"
    rnd = {task["name"]: task for task in t["round"]["dag"]["tasks"]}
    assert rnd["train"]["withParam"] == "{{tasks.suggest.outputs.parameters.trials}}"
    assert rnd["next"]["template"] == "round"  # the recursion
    assert rnd["next"]["when"] == "{{tasks.suggest.outputs.parameters.more}} == true"
    args = t["train"]["container"]["args"]
    assert json.loads(args[args.index("--pruner") + 1])["rule"] == "asha"


def test_the_manifest_stays_the_same_size_whatever_max_trials() -> None:
    raw = yaml.safe_load((REPO / "pipelines" / "tpe.yaml").read_text())
    sizes = []
    for n in (12, 5000):
        cfg = copy.deepcopy(raw)
        cfg["search"]["max_trials"] = n
        doc = build(parse_config(cfg)).to_dict()
        sizes.append((len(templates(doc)), len(dump_yaml(doc).splitlines())))
    assert sizes[0] == sizes[1]


def small(max_trials: int) -> dict[str, Any]:
    raw = yaml.safe_load(SMALL.read_text())
    raw["search"]["max_trials"] = max_trials
    doc = build(parse_config(raw, source=str(SMALL))).to_dict()
    validate_or_raise(doc, str(SMALL))
    return doc


def results(shared: Path, sweep_id: str) -> dict[str, dict[str, Any]]:
    sweep = shared / "sweepyard-shared" / "sweeps" / sweep_id
    plan = json.loads((sweep / "plan.json").read_text())
    return {
        t["id"]: json.loads((sweep / "trials" / t["id"] / "result.json").read_text()) for t in plan
    }


@pytest.mark.slow
def test_tpe_with_preemptions_runs_locally_and_a_resubmit_continues_the_study(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("SWEEPYARD_SHARED", raising=False)
    kw: dict[str, Any] = {"project_root": tmp_path, "progress": False, "sweep_id": "tpe-chaos"}
    assert local_cli.submit(small(4), chaos=0.3, seed=25, **kw) == 0  # preempts round 1 at 2 s
    shared = tmp_path / ".sweepyard" / "shared"
    first = results(shared, "tpe-chaos")
    assert len(first) == 4 and {r["status"] for r in first.values()} <= {"done", "pruned"}
    assert all(r["steps_run"] == (r["pruned_at_step"] if r["status"] == "pruned" else 20)
               for r in first.values())  # fmt: skip
    (run_dir,) = (tmp_path / ".sweepyard" / "runs").iterdir()
    state = json.loads((run_dir / "run.json").read_text())
    suggests = [n for n in state["nodes"] if n["template"] == "suggest" and n["type"] == "Pod"]
    assert len(suggests) == 3  # two rounds of 2, then the round that tells and ends
    assert preemptions_ended_as_kills(state["nodes"])

    # The same sweep id, two more trials allowed: the study goes on, nothing finished reruns.
    assert local_cli.submit(small(6), chaos=0.0, **kw) == 0
    second = results(shared, "tpe-chaos")
    assert len(second) == 6 and set(first) < set(second)
    assert all(second[t]["finished_at"] == r["finished_at"] for t, r in first.items())
    journal = shared / "sweepyard-shared" / "sweeps" / "tpe-chaos" / "study.journal"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    trials = optuna.load_study(study_name="tpe-chaos", storage=storage).get_trials()
    assert len(trials) == 6 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}

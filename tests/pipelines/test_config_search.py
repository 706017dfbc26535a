"""The adaptive-search keys of the config: pipelines/tpe.yaml loads; each bad combination is an
error at load time naming its key path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from pipelines.build.steps import pruner_spec, search_spec, secret_env, suggest_args, train_args
from pipelines.config import ConfigError, config_path, parse_config
from tests.support.config_search import TPE

BOOST = yaml.safe_load(config_path("boost").read_text())


def test_the_tpe_pipeline_loads_with_its_search() -> None:
    cfg = parse_config(copy.deepcopy(TPE))
    assert cfg.search.method == "tpe" and cfg.search.adaptive and cfg.batch == 4
    assert cfg.search.stopping_metric == "val_loss"  # the objective's by default
    spec = search_spec(cfg)
    assert spec["algorithm"] == "tpe" and spec["max_trials"] == 12 and spec["batch"] == 4
    assert spec["early_stopping"]["rule"] == "asha" and spec["early_stopping"]["min_step"] == 20
    assert "storage" not in spec and suggest_args(cfg, sweep_id="s")[:2] == ["--sweep-id", "s"]
    args = train_args(cfg, sweep_id="s", trial_id="t", params="{}", data_path="d", data_hash="h")
    assert "--pruner" in args and pruner_spec(cfg) == {
        "rule": "asha", "metric": "val_loss", "direction": "minimize", "min_step": 20,
        "reduction_factor": 3, "warmup_steps": 0, "interval_steps": 1,
    }  # fmt: skip
    assert all(s.key != "study-storage-url" for s in secret_env(cfg, "suggest"))


def test_batch_defaults_to_parallelism_and_grid_search_is_unchanged() -> None:
    raw = copy.deepcopy(TPE)
    del raw["search"]["batch"]
    raw["parallelism"] = 3
    assert parse_config(raw).batch == 3
    sweep = parse_config(yaml.safe_load(config_path("sweep").read_text()))
    assert sweep.search.method == "grid" and not sweep.search.adaptive
    args = train_args(sweep, sweep_id="s", trial_id="t", params="{}", data_path="d", data_hash="h")
    assert "--pruner" not in args


def test_a_database_storage_comes_from_the_secret_never_the_manifest() -> None:
    raw = copy.deepcopy(TPE)
    raw["search"]["storage"] = "secret"
    cfg = parse_config(raw)
    for step in ("suggest", "train"):
        (ref,) = [s for s in secret_env(cfg, step) if s.key == "study-storage-url"]
        assert ref.env == "SWEEPYARD_STUDY_STORAGE" and not ref.optional
    assert search_spec(cfg)["storage"] == "secret"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value

    return mutate


GRID_ONLY = {"grid": {"lr": [0.01, 0.1]}, "fixed": {"steps": 20, "hidden": 16, "batch_size": 32,
                                                     "seed": 0}}  # fmt: skip
CASES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None], str, str]] = [
    ("tpe on a grid-only space", TPE, _set("search.space", GRID_ONLY), "search.algorithm",
     "this space has none"),
    ("batch above max_trials", TPE, _set("search.batch", 13), "search.batch",
     "more than max_trials=12"),
    ("stopping on a metric never reported", TPE, _set("search.early_stopping.metric", "val_f1"),
     "search.early_stopping.metric", "never reports 'val_f1'"),
    ("unknown rule", TPE, _set("search.early_stopping.rule", "hyperband"),
     "search.early_stopping.rule", "'asha' or 'median'"),
    ("reduction factor below 2", TPE, _set("search.early_stopping.reduction_factor", 1),
     "search.early_stopping.reduction_factor", "greater than or equal to 2"),
    ("unknown algorithm", TPE, _set("search.algorithm", "bayes"), "search.algorithm", "tpe"),
    ("storage other than the secret", TPE, _set("search.storage", "postgresql://x"),
     "search.storage", "'secret'"),
    ("bad time budget", TPE, _set("search.time_budget", "two hours"), "search.time_budget",
     "'two hours' is not a duration"),
    ("n_trials with tpe", TPE, _set("search.space.random.n_trials", 5),
     "search.space.random.n_trials", "max_trials counts"),
    ("early stopping on a grid", BOOST, _set("search.early_stopping", {"rule": "asha"}),
     "search.early_stopping", "applies to adaptive search"),
    ("batch on a grid", BOOST, _set("search.batch", 2), "search.batch",
     "applies to adaptive search"),
    ("random without n_trials", TPE, _set("search.algorithm", "random"),
     "search.space.random.n_trials", "required key is missing"),
    ("a command's undeclared metric", BOOST, lambda raw: raw["search"].update(
        algorithm="tpe", space={"random": {"params": {"eta": {"loguniform": [0.01, 0.3]}}},
                                "fixed": {"rounds": 10, "num_leaves": 7, "seed": 0}},
        early_stopping={"rule": "median", "metric": "val_auc"}),
     "search.early_stopping.metric", "declares: train_loss, val_loss, val_accuracy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "base", "mutate", "key", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_search_is_rejected_at_load_naming_the_key(
    case: str,
    base: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    key: str,
    message: str,
) -> None:
    raw = copy.deepcopy(base)
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="pipelines/bad.yaml")
    problems = dict(info.value.problems)
    assert key in problems, f"{case}: expected a problem at {key!r}, got {info.value.problems}"
    assert message in problems[key], f"{case}: {problems[key]!r}"

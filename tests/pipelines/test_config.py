"""The sweep config: the default loads, and broken ones are rejected naming the offending key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import PIPELINES_DIR, ConfigError, load_config, parse_config

DEFAULT = yaml.safe_load((PIPELINES_DIR / "sweep.yaml").read_text())


def test_default_config_loads_with_its_values() -> None:
    cfg = load_config("sweep")
    assert cfg.name == "sweep"
    assert cfg.data.source.startswith("pkg://")
    assert cfg.search.space.size() >= 8  # the end-to-end run needs at least 8 trials
    assert cfg.retries.limit == cfg.retries.preemptions + cfg.retries.app_errors
    assert cfg.schedule is not None and cfg.schedule.cron == "0 3 * * *"


def test_image_override_replaces_the_configs_image() -> None:
    assert (
        load_config("sweep", image="registry.example/x/y:abc").image == "registry.example/x/y:abc"
    )


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown top-level key", _set("paralelism", 3), "paralelism", "unknown key"),
    ("unknown nested key", _set("resources.gpu.kind", "a100"), "resources.gpu.kind", "unknown key"),
    ("missing name", _delete("name"), "name", "required key is missing"),
    ("bad name", _set("name", "My_Sweep"), "name", "should match pattern"),
    ("missing data source", _delete("data.source"), "data.source", "required key is missing"),
    ("grid not a list", _set("search.space.grid.lr", 0.1), "search.space.grid.lr", "valid list"),
    (
        "empty grid list",
        _set("search.space.grid.lr", []),
        "search.space.grid.lr",
        "at least 1 item",
    ),
    (
        "unknown distribution",
        _set("search.space.random", {"n_trials": 4, "params": {"lr": {"normal": [0, 1]}}}),
        "search.space.random.params.lr",
        "expected exactly one of",
    ),
    (
        "loguniform not positive",
        _set("search.space.random", {"n_trials": 4, "params": {"wd": {"loguniform": [0, 1]}}}),
        "search.space.random.params.wd.loguniform",
        "bounds must be positive",
    ),
    (
        "uniform reversed",
        _set("search.space.random", {"n_trials": 4, "params": {"p": {"uniform": [1, 0]}}}),
        "search.space.random.params.p.uniform",
        "low must be below high",
    ),
    (
        "n_trials zero",
        _set("search.space.random", {"n_trials": 0, "params": {"p": {"choice": [1]}}}),
        "search.space.random.n_trials",
        "greater than or equal to 1",
    ),
    (
        "param defined twice",
        _set("search.space.fixed.lr", 0.1),
        "search.space",
        "defined more than once: lr",
    ),
    ("space too large", _set("search.max_trials", 2), "search", "more than max_trials=2"),
    (
        "bad direction",
        _set("search.objective.direction", "down"),
        "search.objective.direction",
        "'minimize' or 'maximize'",
    ),
    ("parallelism zero", _set("parallelism", 0), "parallelism", "greater than or equal to 1"),
    (
        "negative gpus",
        _set("resources.gpu.count", -1),
        "resources.gpu.count",
        "greater than or equal to 0",
    ),
    ("bad memory", _set("resources.memory", "16 gigs"), "resources.memory", "should match pattern"),
    (
        "bad backoff",
        _set("retries.backoff.duration", "10 seconds"),
        "retries.backoff.duration",
        "'10 seconds' is not a duration",
    ),
    (
        "grace too long",
        _set("cluster.grace_seconds", 30),
        "cluster.grace_seconds",
        "less than or equal to 15",
    ),
    (
        "six-field cron",
        _set("schedule.cron", "0 0 3 * * *"),
        "schedule.cron",
        "cron must have 5 fields",
    ),
    (
        "garbage cron",
        _set("schedule.cron", "every day"),
        "schedule.cron",
        "cron must have 5 fields",
    ),
    (
        "invalid cron field",
        _set("schedule.cron", "61 3 * * *"),
        "schedule.cron",
        "not a valid cron",
    ),
    (
        "unknown time zone",
        _set("schedule.timezone", "Mars/Olympus"),
        "schedule.timezone",
        "unknown time zone",
    ),
    (
        "password in data URI",
        _set("data.source", "postgresql://u:hunter2@db/x"),
        "data.source",
        "carries a password",
    ),
    (
        "SQL source without query",
        _set("data.source", "postgresql://u@db:5432/x"),
        "data",
        "needs 'query'",
    ),
    (
        "tensorboard root leaving the shared disk",
        _set("tracking.tensorboard_root", "../../../etc/x"),
        "tracking.tensorboard_root",
        "must stay on the shared disk",
    ),
    (
        "bad tracking URI",
        _set("tracking.mlflow_uri", "mlflow-server"),
        "tracking.mlflow_uri",
        "should match pattern",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "key", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_is_rejected_naming_the_key(
    case: str, mutate: Callable[[dict[str, Any]], None], key: str, message: str
) -> None:
    raw = copy.deepcopy(DEFAULT)
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="pipelines/broken.yaml")
    paths = [p for p, _ in info.value.problems]
    assert key in paths, f"{case}: expected a problem at {key!r}, got {info.value.problems}"
    msg = dict(info.value.problems)[key]
    assert message in msg, f"{case}: {msg!r}"
    assert "pipelines/broken.yaml" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unreadable_and_non_yaml_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: sweep\nsearch: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: line \d+, column \d+"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(lst)


def test_every_problem_is_reported_at_once() -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["bogus"] = 1
    raw["parallelism"] = -4
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert {p for p, _ in info.value.problems} >= {"bogus", "parallelism"}

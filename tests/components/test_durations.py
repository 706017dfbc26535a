"""One duration grammar, Go's ``time.ParseDuration`` (``components.durations``), read the same way by
the config, the validator, the local runner, the suggest step and the KFP package."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.durations import (
    is_duration,
    non_negative_duration,
    parse_duration,
    parse_seconds_or_duration,
    whole_seconds,
)
from components.search.spec import SearchSpec
from pipelines.argo.expr import ExprError
from pipelines.backends.local.retry import backoff_seconds
from pipelines.backends.local.spec import deadline_seconds
from pipelines.build.argo import build
from pipelines.config import PIPELINES_DIR, ConfigError, parse_config
from pipelines.validate import validate_document
from pipelines.validate.lint import cron_error
from tests.support.config_search import TPE

# Go's own test table (src/time/time_test.go, parseDurationTests), in seconds.
VALID = [
    ("0", 0.0),
    ("+0", 0.0),
    ("-0", 0.0),
    ("5s", 5.0),
    ("1h30m", 5400.0),
    ("1.5h", 5400.0),
    ("-5s", -5.0),
    ("+5s", 5.0),
    (".5s", 0.5),
    ("1.s", 1.0),
    ("1.004s", 1.004),
    ("300ms", 0.3),
    ("1us", 1e-6),
    ("2µs", 2e-6),  # U+00B5 micro sign
    ("2μs", 2e-6),  # U+03BC Greek mu
    ("10ns", 1e-8),
    ("3h30m15s", 12615.0),
    ("1h1m1s1ms1us1ns", 3661.001001001),
    ("-2m3.4s", -123.4),
    ("2562047h", 2562047 * 3600.0),  # near Go's limit, still in it
]
INVALID = [
    "",
    "5",  # no unit: only a wrapper (Argo's backoff) reads bare seconds
    "1d",  # no days
    "1w",
    "1 h",
    " 5s",
    "5s ",
    "h",
    ".s",
    "-.s",
    "-",
    "+",
    "1.",
    "1h5",
    "00",
    "1hh",
    "+-5s",
    "1h 30m",
    "٣s",  # a digit outside ASCII
    "9223372036854775808ns",  # past Go's int64 nanoseconds
]


@pytest.mark.parametrize(("text", "seconds"), VALID, ids=[v[0] for v in VALID])
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)
    assert is_duration(text)


@pytest.mark.parametrize("text", INVALID)
def test_non_durations_are_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert not is_duration(text)


def test_the_refusals_say_why() -> None:
    def why(text: str) -> str:
        with pytest.raises(ValueError) as info:
            parse_duration(text)
        return str(info.value)

    assert "missing unit" in why("5")
    assert "no day unit (48h is two days)" in why("2d")
    assert "no spaces" in why("1h 30m")
    assert "expected a number" in why(".s")
    assert "Go's limit" in why("2562048h")
    assert not is_duration(5)  # not a string


def test_argo_reads_bare_integers_as_seconds_in_backoff_and_suspend_fields() -> None:
    assert parse_seconds_or_duration("30") == 30.0
    assert parse_seconds_or_duration("-5") == -5.0  # strconv.Atoi takes a sign
    assert parse_seconds_or_duration("1m30s") == 90.0
    assert parse_seconds_or_duration("0") == 0.0
    for text in ("1.5", "", "30 ", "1d"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_seconds_or_duration(text)


def test_the_subsets_a_wait_or_a_budget_reads() -> None:
    assert non_negative_duration("0") == "0"
    assert non_negative_duration(".5s") == ".5s"
    with pytest.raises(ValueError, match="negative"):
        non_negative_duration("-5s")
    assert whole_seconds("10m") == 600
    assert whole_seconds("1m30s") == 90
    with pytest.raises(ValueError, match="not a whole number of seconds"):
        whole_seconds("1500ms")
    with pytest.raises(ValueError, match="negative"):
        whole_seconds("-1s")


def test_cron_every_takes_a_go_duration() -> None:
    assert cron_error("@every 1h30m") is None
    assert cron_error("@every 1.5h") is None
    assert cron_error("@every 500ms") is None
    for bad in ("@every 1d", "@every 1h 30m", "@every 90"):
        assert "'@every' needs a duration" in (cron_error(bad) or "")


# --- the validator and the runner agree ------------------------------------------------------

BACKOFF = [
    "1s",
    "30",
    "0",
    "-5s",
    ".5s",
    "1us",
    "2µs",
    "1.5h",
    "1h30m",
    "1.s",
    "1d",
    "1 h",
    "h",
    ".s",
    "1.5",
    "5 ",
    "ten",
]
SWEEP = yaml.safe_load((PIPELINES_DIR / "compiled" / "sweep.yaml").read_text())


def _train(doc: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in doc["spec"]["templates"] if t["name"] == "train")


@pytest.mark.parametrize("key", ["duration", "maxDuration", "cap"])
@pytest.mark.parametrize("text", BACKOFF)
def test_a_backoff_the_validator_accepts_is_one_the_runner_reads(key: str, text: str) -> None:
    doc = copy.deepcopy(SWEEP)
    _train(doc)["retryStrategy"]["backoff"][key] = text
    problems = [str(p) for p in validate_document(doc) if f"backoff.{key}" in str(p)]
    try:
        seconds: float | None = backoff_seconds({key: text}, key, "template train")
    except ExprError as e:
        assert f"template train.retryStrategy.backoff.{key}: {text!r}" in str(e)
        seconds = None
    assert (problems == []) == (seconds is not None), (problems, seconds)
    assert (seconds is not None) == is_duration(text, parse_seconds_or_duration)


def test_active_deadline_is_whole_seconds_not_a_duration() -> None:
    assert deadline_seconds({"activeDeadlineSeconds": 86400}, "spec") == 86400.0
    assert deadline_seconds({"activeDeadlineSeconds": "30"}, "spec") == 30.0
    assert deadline_seconds({}, "spec") is None
    with pytest.raises(ExprError, match=r"spec\.activeDeadlineSeconds: '15s'"):
        deadline_seconds({"activeDeadlineSeconds": "15s"}, "spec")


# --- the config agrees with both, and names the key it refuses --------------------------------

DEFAULT = yaml.safe_load((PIPELINES_DIR / "sweep.yaml").read_text())
CONFIG_BACKOFF_OK = ["15s", "0", "1m30s", "1h", "90s", "1.5h", "2000000us"]
CONFIG_BACKOFF_REFUSED = {
    "1d": "no day unit",
    "1 h": "no spaces",
    "5": "missing unit",
    "-5s": "negative",
    "1.5s": "not a whole number of seconds",
    ".5s": "not a whole number of seconds",
    "10 seconds": "is not a duration",
}


def _with_backoff(key: str, text: str) -> dict[str, Any]:
    raw = copy.deepcopy(DEFAULT)
    raw["retries"]["backoff"][key] = text
    return raw


@pytest.mark.parametrize("key", ["duration", "max_duration"])
@pytest.mark.parametrize("text", CONFIG_BACKOFF_OK)
def test_a_backoff_the_config_accepts_validates_and_runs(key: str, text: str) -> None:
    cfg = parse_config(_with_backoff(key, text))
    doc = build(cfg).to_dict()
    assert validate_document(doc) == []
    backoff = _train(doc)["retryStrategy"]["backoff"]
    argo_key = {"duration": "duration", "max_duration": "maxDuration"}[key]
    assert backoff[argo_key] == text
    assert backoff_seconds(backoff, argo_key, "train") == whole_seconds(text)


@pytest.mark.parametrize("key", ["duration", "max_duration"])
@pytest.mark.parametrize(("text", "why"), CONFIG_BACKOFF_REFUSED.items())
def test_a_backoff_the_config_refuses_names_its_key(key: str, text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with_backoff(key, text), source="pipelines/broken.yaml")
    problems = dict(info.value.problems)
    assert f"retries.backoff.{key}" in problems, info.value.problems
    assert why in problems[f"retries.backoff.{key}"]
    assert repr(text) in problems[f"retries.backoff.{key}"]


def test_kfp_gets_the_whole_seconds_of_any_go_duration(tmp_path: Path) -> None:
    from tests.support.kfp_package import compiled, tasks

    raw = _with_backoff("duration", "1m30s")
    raw["retries"]["backoff"]["max_duration"] = "1h30m"
    _, spec, _ = compiled(parse_config(raw), tmp_path)
    policy = tasks(spec)["train"].retry_policy
    assert (policy.backoff_duration.seconds, policy.backoff_max_duration.seconds) == (90, 5400)


def _tpe_with_budget(text: str) -> dict[str, Any]:
    raw = copy.deepcopy(TPE)
    raw["search"]["time_budget"] = text
    return raw


@pytest.mark.parametrize("text", ["2h", "90m", "1h30m", "1.5h", "0", ".5s", "300ms"])
def test_a_time_budget_is_a_non_negative_go_duration(text: str) -> None:
    cfg = parse_config(_tpe_with_budget(text))
    assert cfg.search.time_budget == text
    spec = SearchSpec.model_validate_json(
        SearchSpec(
            algorithm="tpe", space=cfg.search.space, max_trials=4, batch=2, time_budget=text
        ).model_dump_json()
    )
    assert parse_duration(spec.time_budget or "") >= 0


@pytest.mark.parametrize(
    ("text", "why"),
    [("2d", "no day unit"), ("-1h", "negative"), ("two hours", "is not a duration"), ("5", "unit")],
)
def test_a_time_budget_the_config_refuses_names_its_key(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_tpe_with_budget(text))
    problems = dict(info.value.problems)
    assert why in problems["search.time_budget"], info.value.problems
    with pytest.raises(ValueError, match=why):  # and the suggest step's spec refuses it too
        SearchSpec(algorithm="tpe", space=parse_config(TPE).search.space, max_trials=4, batch=2,
                   time_budget=text)  # fmt: skip

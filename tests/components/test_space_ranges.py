"""Integer ranges (``{int: [low, high]}``, optional ``step`` and ``log``) and stepped uniform ranges
(``{uniform: [low, high], step: s}``): sampled on their grid, mapped to Optuna's distributions,
modellable by adaptive search, and every bad bound refused with its key path at load time."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from typing import Any

import pytest
import yaml

from components.search.spec import continuous, distributions, trial_params
from components.space import IntRange, SearchSpace, Uniform
from pipelines.config import ConfigError, config_path, parse_config

TPE = yaml.safe_load(config_path("tpe").read_text())


def test_an_int_range_with_a_step_samples_every_step_and_nothing_else() -> None:
    d = IntRange.model_validate({"int": [16, 128], "step": 16})
    rng = random.Random(0)
    seen = Counter(d.sample(rng) for _ in range(2000))
    assert set(seen) == set(range(16, 129, 16))  # both ends included, every step drawn
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in seen)


def test_a_log_int_range_stays_in_bounds_and_favours_small_values() -> None:
    d = IntRange.model_validate({"int": [1, 1024], "log": True})
    rng = random.Random(1)
    draws = [d.sample(rng) for _ in range(4000)]
    assert all(isinstance(v, int) and 1 <= v <= 1024 for v in draws)
    assert min(draws) == 1 and max(draws) > 512
    # log-uniform: each factor of 2 gets about a tenth of the draws; uniform would put half > 512
    assert sum(v > 512 for v in draws) / len(draws) < 0.2
    assert sorted(draws)[len(draws) // 2] < 64


def test_a_stepped_uniform_samples_on_its_grid_including_both_ends() -> None:
    d = Uniform.model_validate({"uniform": [1.0, 5.0], "step": 0.1})
    rng = random.Random(2)
    draws = [d.sample(rng) for _ in range(3000)]
    assert all(1.0 <= v <= 5.0 for v in draws)
    assert all(math.isclose(round((v - 1.0) / 0.1), (v - 1.0) / 0.1, abs_tol=1e-6) for v in draws)
    assert 1.0 in draws and 5.0 in draws and len(set(draws)) == 41


def test_ranges_without_the_new_keys_sample_exactly_as_before() -> None:
    """The same seed gives the same trials: existing random sweeps keep their trial ids."""
    space = SearchSpace.model_validate(
        {"random": {"n_trials": 5, "seed": 3, "params": {"lr": {"uniform": [0.0, 1.0]},
                                                         "h": {"choice": [1, 2, 3]}}}}
    )  # fmt: skip
    rng = random.Random(3)
    expected = []
    for _ in range(5):
        h = rng.choice([1, 2, 3])
        lr = float(f"{rng.uniform(0.0, 1.0):.6g}")
        expected.append({"h": h, "lr": lr})
    assert space.expand() == expected
    # and the compiled form of a range without step/log is the one it always had
    dumped = space.model_dump(mode="json", exclude_defaults=True)
    assert dumped["random"]["params"]["lr"] == {"uniform": [0.0, 1.0]}


def test_random_search_expands_int_ranges_to_ints() -> None:
    space = SearchSpace.model_validate(
        {"random": {"n_trials": 50, "params": {"layers": {"int": [2, 8], "step": 2},
                                               "width": {"int": [8, 512], "log": True}}}}
    )  # fmt: skip
    trials = space.expand()
    assert {t["layers"] for t in trials} <= {2, 4, 6, 8}
    assert all(isinstance(t["width"], int) and 8 <= t["width"] <= 512 for t in trials)
    again = SearchSpace.model_validate(space.model_dump(mode="json", exclude_defaults=True))
    assert again == space and again.expand() == trials


def test_int_and_stepped_ranges_map_to_optunas_distributions() -> None:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space = SearchSpace.model_validate(
        {
            "grid": {"opt": ["sgd", "adam"]},
            "random": {
                "params": {
                    "layers": {"int": [2, 8], "step": 2},
                    "width": {"int": [8, 512], "log": True},
                    "epochs": {"int": [1, 3]},
                    "dropout": {"uniform": [0.0, 0.5], "step": 0.1},
                    "lr": {"loguniform": [1e-4, 1e-1]},
                    "act": {"choice": ["relu", "gelu"]},
                }
            },
            "fixed": {"seed": 0},
        }
    )
    dists = distributions(space)
    assert dists == {
        "act": CategoricalDistribution(["relu", "gelu"]),
        "dropout": FloatDistribution(0.0, 0.5, step=0.1),
        "epochs": IntDistribution(1, 3),
        "layers": IntDistribution(2, 8, step=2),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "opt": CategoricalDistribution(["sgd", "adam"]),
        "width": IntDistribution(8, 512, log=True),
    }
    assert continuous(space) == ["dropout", "epochs", "layers", "lr", "width"]


def test_an_optuna_study_suggests_on_the_step_grid_and_trial_params_keep_ints() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.model_validate(
        {"random": {"params": {"layers": {"int": [2, 8], "step": 2},
                               "dropout": {"uniform": [0.0, 0.5], "step": 0.1}}}}
    )  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    for i in range(12):
        t = study.ask(distributions(space))
        params = trial_params(space, t.params)
        assert params["layers"] in {2, 4, 6, 8} and isinstance(params["layers"], int)
        assert params["dropout"] in {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}  # six digits: exact
        study.tell(t, params["dropout"] + params["layers"] * 0.01 + i * 1e-6)


def _tpe_with(params: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(TPE)
    raw["search"]["space"]["random"]["params"] = params
    raw["search"]["space"]["fixed"] = {"steps": 180, "eval_every": 20, "seed": 0, "lr": 0.01,
                                       "weight_decay": 0.0}  # fmt: skip
    return raw


def test_an_int_range_is_enough_for_an_adaptive_search() -> None:
    cfg = parse_config(_tpe_with({"hidden": {"int": [16, 64], "step": 16},
                                  "batch_size": {"int": [16, 256], "log": True}}))  # fmt: skip
    assert cfg.search.adaptive
    assert continuous(cfg.search.space) == ["batch_size", "hidden"]


P = "search.space.random.params"
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("int reversed", {"n": {"int": [8, 2]}}, f"{P}.n.int", "low must be below high"),
    ("int empty", {"n": {"int": [4, 4]}}, f"{P}.n.int", "low must be below high"),
    ("int with float bounds", {"n": {"int": [1.5, 4]}}, f"{P}.n.int", "must be integers"),
    ("int one bound", {"n": {"int": [4]}}, f"{P}.n.int[1]", "required key is missing"),
    ("step not dividing", {"n": {"int": [1, 10], "step": 2}}, f"{P}.n.step", "multiple of step 2"),
    ("step zero", {"n": {"int": [1, 10], "step": 0}}, f"{P}.n.step", "greater than or equal to 1"),
    ("log from zero", {"n": {"int": [0, 10], "log": True}}, f"{P}.n.log", "low >= 1"),
    ("log with step", {"n": {"int": [1, 9], "step": 2, "log": True}}, f"{P}.n.log", "no step"),
    ("unknown key", {"n": {"int": [1, 9], "base": 2}}, f"{P}.n.base", "unknown key"),
    ("two kinds", {"n": {"int": [1, 9], "uniform": [0, 1]}}, f"{P}.n", "expected exactly one"),
    ("uniform step not dividing", {"p": {"uniform": [0, 1], "step": 0.3}}, f"{P}.p.step",
     "whole multiple of step 0.3"),
    ("uniform step negative", {"p": {"uniform": [0, 1], "step": -0.5}}, f"{P}.p.step",
     "greater than 0"),
    ("uniform step above the span", {"p": {"uniform": [0, 1], "step": 2}}, f"{P}.p.step",
     "whole multiple"),
    ("step on loguniform", {"p": {"loguniform": [0.1, 1], "step": 0.1}}, f"{P}.p.step",
     "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "params", "path", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_ranges_are_refused_naming_the_key(
    case: str, params: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_tpe_with({**params, "x": {"uniform": [0, 1]}}))
    assert path in [p for p, _ in err.value.problems], err.value.problems
    assert any(message in m for p, m in err.value.problems if p == path), err.value.problems

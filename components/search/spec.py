"""What the suggest step and the trials' pruner need to know of a sweep's adaptive search.

Pure types (pydantic, no I/O, Optuna imported only by :func:`distributions`): ``pipelines/config.py``
embeds :class:`EarlyStopping` in ``search.early_stopping`` and sends a :class:`SearchSpec` to the
suggest step as JSON (``--search``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from components.durations import non_negative_duration
from components.space import Choice, IntRange, LogUniform, SearchSpace, Uniform

ADAPTIVE = ("tpe", "cmaes", "gp", "qmc")  # Optuna samplers; grid and random are planned up front
Algorithm = Literal["grid", "random", "tpe", "cmaes", "gp", "qmc"]
# ``search.time_budget``: a Go duration (components.durations), zero or more; "2h", "90m", "1h30m".
TimeBudget = Annotated[str, AfterValidator(non_negative_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EarlyStopping(_Strict):
    """``search.early_stopping``: prune trials on the objective's intermediate values.

    ``asha`` is Optuna's SuccessiveHalvingPruner (``min_step`` its min resource, rungs every
    ``reduction_factor`` times further); ``median`` its MedianPruner (``warmup_steps``,
    ``interval_steps``).
    """

    rule: Literal["asha", "median"]
    metric: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")] | None = None  # None: objective
    min_step: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    interval_steps: Annotated[int, Field(ge=1)] = 1


class SearchSpec(_Strict):
    """The suggest step's ``--search``: everything a round needs, nothing secret."""

    algorithm: Literal["tpe", "cmaes", "gp", "qmc"]
    space: SearchSpace
    max_trials: Annotated[int, Field(ge=1)]
    batch: Annotated[int, Field(ge=1)]
    metric: str = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    seed: int = 0
    time_budget: TimeBudget | None = None
    storage: Literal["secret"] | None = None
    early_stopping: EarlyStopping | None = None
    trials_per_pod: Annotated[int, Field(ge=1)] = 1  # > 1: a round's pods claim its trials


def continuous(space: SearchSpace) -> list[str]:
    """The params a model of the objective can interpolate on (uniform, loguniform, int ranges)."""
    if space.random is None:
        return []
    return sorted(
        n for n, d in space.random.params.items() if isinstance(d, Uniform | LogUniform | IntRange)
    )


def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna's distribution of each searched param: random's uniform (stepped: ``step``),
    loguniform, int ranges (IntDistribution) and choices, grid lists as categorical (``fixed``
    params are not searched)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {n: CategoricalDistribution(list(v)) for n, v in space.grid.items()}
    for name, d in (space.random.params if space.random else {}).items():
        if isinstance(d, Uniform):
            out[name] = FloatDistribution(*d.uniform, step=d.step)
        elif isinstance(d, IntRange):
            out[name] = IntDistribution(*d.int, log=d.log, step=d.step)
        elif isinstance(d, LogUniform):
            out[name] = FloatDistribution(*d.loguniform, log=True)
        elif isinstance(d, Choice):
            out[name] = CategoricalDistribution(list(d.choice))
    return dict(sorted(out.items()))


def trial_params(space: SearchSpace, sampled: dict[str, Any]) -> dict[str, Any]:
    """A trial's params: ``fixed`` plus the sampled values (floats to six significant digits, as
    random search writes them: readable, and a stable trial id)."""
    rounded = {
        k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in sorted(sampled.items())
    }
    return {**space.fixed, **rounded}

"""The search space of a sweep and its expansion into trials.

Pure types (pydantic, no I/O): ``pipelines/config.py`` embeds :class:`SearchSpace` in the sweep
config, and ``components/plan.py`` expands it at run time.
"""

from __future__ import annotations

import builtins
import itertools
import math
import random
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Uniform(_Strict):
    """A float drawn uniformly from ``[low, high]``: ``{uniform: [low, high]}``; with ``step``, one of
    ``low, low + step, ..., high`` (``{uniform: [0, 1], step: 0.25}``, Optuna's stepped float)."""

    uniform: tuple[float, float]
    step: Annotated[float, Field(gt=0)] | None = None

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v

    @field_validator("step")
    @classmethod
    def _divides(cls, v: float | None, info: ValidationInfo) -> float | None:
        bounds = info.data.get("uniform")
        if v is not None and bounds is not None:
            span = bounds[1] - bounds[0]
            n = span / v
            if n < 1 - 1e-9 or abs(n - round(n)) > 1e-9 * max(1.0, n):
                raise ValueError(
                    f"high - low ({span:g}) must be a whole multiple of step {v:g}, so that high "
                    "is one of the values"
                )
        return v

    def sample(self, rng: random.Random) -> float:
        low, high = self.uniform
        if self.step is None:
            return _round(rng.uniform(low, high))
        n = round((high - low) / self.step)
        return _round(min(high, low + self.step * rng.randint(0, n)))


class LogUniform(_Strict):
    """A float whose log is uniform on ``[log low, log high]``: ``{loguniform: [low, high]}``."""

    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _positive_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0 or v[1] <= 0:
            raise ValueError(f"bounds must be positive, got [{v[0]}, {v[1]}]")
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v

    def sample(self, rng: random.Random) -> float:
        low, high = self.loguniform
        return _round(math.exp(rng.uniform(math.log(low), math.log(high))))


class Choice(_Strict):
    """One of a list of values: ``{choice: [a, b, c]}``."""

    choice: Annotated[list[Scalar], Field(min_length=1)]

    def sample(self, rng: random.Random) -> Scalar:
        return rng.choice(self.choice)


class IntRange(_Strict):
    """An integer from ``[low, high]`` (both included): ``{int: [low, high]}``, every ``step``-th
    one from low (``{int: [32, 256], step: 32}``), or log-uniformly (``{int: [1, 1024], log: true}``).
    Optuna's IntDistribution: ``log`` needs ``low >= 1`` and no ``step``."""

    int: tuple[builtins.int, builtins.int]
    step: Annotated[builtins.int, Field(ge=1)] = 1
    log: bool = False

    @field_validator("int", mode="before")
    @classmethod
    def _whole_numbers(cls, v: Any) -> Any:
        if isinstance(v, list | tuple) and any(isinstance(x, bool | float) for x in v):
            raise ValueError(f"bounds must be integers, got {list(v)}")
        return v

    @field_validator("int")
    @classmethod
    def _ordered(cls, v: tuple[builtins.int, builtins.int]) -> tuple[builtins.int, builtins.int]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v

    @field_validator("step")
    @classmethod
    def _divides(cls, v: builtins.int, info: ValidationInfo) -> builtins.int:
        bounds = info.data.get("int")
        if bounds is not None and (bounds[1] - bounds[0]) % v:
            raise ValueError(
                f"high - low ({bounds[1] - bounds[0]}) must be a multiple of step {v}, so that "
                "high is one of the values"
            )
        return v

    @field_validator("log")
    @classmethod
    def _log_range(cls, v: bool, info: ValidationInfo) -> bool:
        bounds, step = info.data.get("int"), info.data.get("step")
        if v and bounds is not None and bounds[0] < 1:
            raise ValueError(f"a log range needs low >= 1, got [{bounds[0]}, {bounds[1]}]")
        if v and step is not None and step != 1:
            raise ValueError(f"a log range takes no step: drop step {step} or log")
        return v

    def sample(self, rng: random.Random) -> builtins.int:
        low, high = self.int
        if self.log:  # uniform in log space over [low - 0.5, high + 0.5), rounded (as Optuna)
            x = math.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))
            return min(high, max(low, round(x)))
        return low + self.step * rng.randint(0, (high - low) // self.step)


# The union's tags are capitalised so that an error's key path skips them (pipelines/config.py
# drops capitalised parts of a location): {uniform: [1, 0]} is "p.uniform", {int: .., step: 0}
# is "p.step".
_TAGS = {"uniform": "Uniform", "loguniform": "LogUniform", "choice": "Choice", "int": "IntRange"}


def _distribution_kind(value: Any) -> str | None:
    keys = (
        set(value)
        if isinstance(value, dict)
        else set(vars(value))
        if isinstance(value, BaseModel)
        else set()
    )
    found = keys & set(_TAGS)
    return _TAGS[found.pop()] if len(found) == 1 else None


Distribution = Annotated[
    Annotated[Uniform, Tag("Uniform")]
    | Annotated[LogUniform, Tag("LogUniform")]
    | Annotated[Choice, Tag("Choice")]
    | Annotated[IntRange, Tag("IntRange")],
    Discriminator(
        _distribution_kind,
        custom_error_type="distribution",
        custom_error_message="expected exactly one of {uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]}, {choice: [...]}",
    ),
]


class RandomSearch(_Strict):
    """``n_trials`` draws from per-parameter distributions, reproducible from ``seed``.

    ``n_trials`` is required for random search (``search.algorithm: random``); an adaptive
    algorithm models the same distributions and counts ``search.max_trials`` instead.
    """

    n_trials: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    params: Annotated[dict[str, Distribution], Field(min_length=1)]


class SearchSpace(_Strict):
    """Grid lists, random distributions, or both (each random draw is crossed with the grid).

    ``fixed`` params are merged into every trial (they are part of its identity).
    """

    grid: dict[str, Annotated[list[Scalar], Field(min_length=1)]] = Field(default_factory=dict)
    random: RandomSearch | None = None
    fixed: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        if not self.grid and self.random is None:
            raise ValueError("define at least one of 'grid' or 'random'")
        names = [*self.grid, *(self.random.params if self.random else {}), *self.fixed]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameter(s) defined more than once: {', '.join(dup)}")
        return self

    def size(self) -> int:
        """Number of trials before duplicates are collapsed (cheap: nothing is expanded)."""
        n = math.prod(len(v) for v in self.grid.values()) if self.grid else 1
        return n * ((self.random.n_trials or 1) if self.random else 1)

    def expand(self) -> list[dict[str, Any]]:
        """Every trial's params, in a deterministic order (duplicates not yet collapsed)."""
        keys = sorted(self.grid)
        grid_points = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(self.grid[k] for k in keys))
        ]
        draws: list[dict[str, Any]] = [{}]
        if self.random is not None:
            rng = random.Random(self.random.seed)
            names = sorted(self.random.params)
            draws = [
                {n: self.random.params[n].sample(rng) for n in names}
                for _ in range(self.random.n_trials or 1)
            ]
        return [{**self.fixed, **point, **draw} for draw in draws for point in grid_points]


def _round(x: float) -> float:
    """Six significant digits: readable params, and stable canonical JSON across platforms."""
    return float(f"{x:.6g}")

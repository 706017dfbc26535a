"""The search space of a sweep and its expansion into trials.

Pure types (pydantic, no I/O): ``pipelines/config.py`` embeds :class:`SearchSpace` in the sweep
config, and ``components/plan.py`` expands it at run time.
"""

from __future__ import annotations

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
    field_validator,
    model_validator,
)

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Uniform(_Strict):
    """A float drawn uniformly from ``[low, high]``: ``{uniform: [low, high]}``."""

    uniform: tuple[float, float]

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"low must be below high, got [{v[0]}, {v[1]}]")
        return v

    def sample(self, rng: random.Random) -> float:
        return _round(rng.uniform(*self.uniform))


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


def _distribution_kind(value: Any) -> str | None:
    keys = (
        set(value)
        if isinstance(value, dict)
        else set(vars(value))
        if isinstance(value, BaseModel)
        else set()
    )
    found = keys & {"uniform", "loguniform", "choice"}
    return found.pop() if len(found) == 1 else None


Distribution = Annotated[
    Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[Choice, Tag("choice")],
    Discriminator(
        _distribution_kind,
        custom_error_type="distribution",
        custom_error_message="expected exactly one of {uniform: [low, high]}, {loguniform: [low, high]}, {choice: [...]}",
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

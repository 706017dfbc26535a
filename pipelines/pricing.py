"""The sweep config's ``cost`` key, and the price table a sweep is costed with.

The dated table (``components/prices.py``) prices GPU types and vCPUs; ``cost`` replaces its
prices for this sweep's GPU type or its vCPUs. A GPU type the table does not price is a config
error unless ``cost.gpu_hour`` prices it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from components.cost import Prices, default_prices

if TYPE_CHECKING:
    from pipelines.config import SweepConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rates(_Strict):
    spot: Annotated[float, Field(ge=0)]
    on_demand: Annotated[float, Field(ge=0)]


class CostConfig(_Strict):
    """Prices that replace the dated table's (``components/prices.py``) for this sweep: per GPU of
    ``resources.gpu.type`` and per vCPU, per hour (USD)."""

    gpu_hour: Rates | None = None
    cpu_hour: Rates | Annotated[float, Field(ge=0)] | None = None


def prices(cfg: SweepConfig) -> Prices:
    """The price table this sweep is costed with: the dated default, with ``cost`` applied."""
    table = default_prices()
    if cfg.cost is None:
        return table
    gpu = {k: dict(v) for k, v in table.gpu_hour.items()}
    cpu = dict(table.cpu_hour)
    if cfg.cost.gpu_hour is not None:
        gpu[cfg.resources.gpu.type] = cfg.cost.gpu_hour.model_dump()
    if isinstance(cfg.cost.cpu_hour, Rates):
        cpu = cfg.cost.cpu_hour.model_dump()
    elif cfg.cost.cpu_hour is not None:
        cpu = {"spot": cfg.cost.cpu_hour, "on_demand": cfg.cost.cpu_hour}
    source = f"{table.source}; overridden by the sweep's `cost` key"
    return Prices.from_dict(
        {"gpu_hour": gpu, "cpu_hour": cpu, "as_of": table.as_of, "source": source}
    )


def check_prices(cfg: SweepConfig) -> list[tuple[str, str]]:
    """A GPU type the price table does not know is an error (``cost.gpu_hour`` prices it)."""
    gpu = cfg.resources.gpu
    if gpu.count and gpu.type not in prices(cfg).gpu_hour:
        return [
            ("resources.gpu.type", f"no price for {gpu.type!r} in the price table of "
             f"{default_prices().as_of} (known: {', '.join(sorted(default_prices().gpu_hour))}): "
             "set cost.gpu_hour {spot, on_demand}")
        ]  # fmt: skip
    return []

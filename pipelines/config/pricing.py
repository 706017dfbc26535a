"""The price table a sweep is costed with, and its config check (the ``cost`` key's schema is
:class:`pipelines.config.model.CostConfig`).

The dated table (``components/prices.py``) prices GPU types and vCPUs; ``cost`` replaces its
prices for this sweep's GPU type or its vCPUs. A GPU type the table does not price is a config
error unless ``cost.gpu_hour`` prices it.
"""

from __future__ import annotations

from components.cost import Prices, default_prices
from pipelines.config.model import Rates, SweepConfig


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

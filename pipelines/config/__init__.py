"""The sweep config: one typed object, loaded once from ``pipelines/<name>.yaml``.

Unknown keys are errors, and every error names the key path and what is wrong, so a broken config
is rejected before anything is compiled or submitted. The schema is :mod:`pipelines.config.model`;
the checks across keys live beside it (:mod:`~pipelines.config.search`,
:mod:`~pipelines.config.pricing`, :mod:`~pipelines.config.distributed`) and
:mod:`pipelines.config.load` runs them.
"""

from pipelines.config.load import PIPELINES_DIR, config_path, load_config, parse_config
from pipelines.config.model import ConfigError, SweepConfig

__all__ = [
    "PIPELINES_DIR",
    "ConfigError",
    "SweepConfig",
    "config_path",
    "load_config",
    "parse_config",
]

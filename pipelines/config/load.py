"""Loading a sweep config: the YAML file read once, the schema (:mod:`pipelines.config.model`)
applied, then the checks across keys (search, prices, trainer, nodes), every problem named by its
key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.config.distributed import check_nodes
from pipelines.config.model import ConfigError, SweepConfig
from pipelines.config.pricing import check_prices
from pipelines.config.search import check_search
from pipelines.config_text import UniqueKeyLoader, describe_error
from pipelines.trainer import check_trainer

PIPELINES_DIR = Path(__file__).resolve().parent.parent


def config_path(name_or_path: str | Path) -> Path:
    """``sweep`` → ``pipelines/sweep.yaml``; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        return p
    return PIPELINES_DIR / f"{name_or_path}.yaml"


def load_config(name_or_path: str | Path, *, image: str | None = None) -> SweepConfig:
    """Load and check a sweep config.

    Args:
        name_or_path: a pipeline name (``sweep``) or a YAML file.
        image: overrides the config's image (the ``IMAGE`` variable of ``make``).

    Raises:
        ConfigError: the file is missing, is not YAML, or breaks the schema; names every key path.
    """
    path = config_path(name_or_path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(source, [("", f"cannot read the file: {e.strerror}")]) from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            source, [("", f"not valid YAML: {where}{getattr(e, 'problem', e)}")]
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [("", f"expected a mapping of keys, got {type(raw).__name__}")])
    if image:
        raw = {**raw, "image": image}
    return parse_config(raw, source=source)


def parse_config(raw: dict[str, Any], *, source: str = "<config>") -> SweepConfig:
    """Validate a config mapping; see :func:`load_config`."""
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, [describe_error(err) for err in e.errors()]) from None
    problems = check_search(cfg)
    problems += check_prices(cfg)
    problems += check_trainer(cfg.trainer, cfg.search.space, has_data=cfg.data is not None)
    problems += check_nodes(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg

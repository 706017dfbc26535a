"""A pipeline's files, as ``make compile`` writes them and ``make check-compiled`` compares them:
its config loaded and checked, the Argo manifests validated, the KFP package; deterministic YAML.

The CLI (:mod:`pipelines.cli`) and the project's checks (:mod:`pipelines.checks`) both call these.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PIPELINES_DIR, SweepConfig, load_config


def dump_yaml(doc: Mapping[str, Any]) -> str:
    """Deterministic YAML for golden files (key order as built, no aliases)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(dict(doc), Dumper=_NoAliases, sort_keys=False, width=120, allow_unicode=True)


def pipeline_names() -> list[str]:
    """Every pipeline: one ``pipelines/<name>.yaml`` config each."""
    return sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))


def checked(name: str) -> SweepConfig:
    """The pipeline's config (``IMAGE`` overriding its image), its warnings printed to stderr."""
    cfg, warnings = checked_with_warnings(name)
    for line in warnings:
        print(line, file=sys.stderr)
    return cfg


def checked_with_warnings(name: str) -> tuple[SweepConfig, list[str]]:
    """The pipeline's config (``IMAGE`` overriding its image) and the warnings about its trainer."""
    from pipelines.trainer import trainer_warnings

    cfg = load_config(name, image=os.environ.get("IMAGE") or None)
    warnings = [
        f"warning: {cfg.name}: {path}: {message}"
        for path, message in trainer_warnings(cfg.trainer, cfg.search.space)
    ]
    return cfg, warnings


def manifests(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """The Argo manifests of a pipeline, by golden file name."""
    from pipelines.build.argo import build, build_cron

    docs = {f"{cfg.name}.yaml": build(cfg).to_dict()}
    if cfg.schedule is not None:
        docs[f"{cfg.name}-cron.yaml"] = build_cron(cfg).to_dict()
    return docs


def validated(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """The document, after the strict schema check and the lint (raises with every problem)."""
    from pipelines.validate import validate_or_raise

    validate_or_raise(doc, source)
    return doc


def compile_kfp(cfg: SweepConfig, out_dir: Path) -> Path:
    """Write the pipeline's KFP package into ``out_dir``; its path."""
    from pipelines.build.kfp import compile_package  # kfp is a dependency: no fallback

    path = out_dir / f"{cfg.name}.kfp.yaml"
    compile_package(cfg, path)
    return path

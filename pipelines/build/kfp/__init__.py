"""The sweep as a Kubeflow Pipelines v2 package: the same steps, commands and image as the Argo
Workflow (:mod:`pipelines.build.argo`).

A planned search (grid, random) is :mod:`~pipelines.build.kfp.grid`'s pipeline, an adaptive one
:mod:`~pipelines.build.kfp.rounds`'s (its rounds unrolled); both wire the components and task
settings of :mod:`~pipelines.build.kfp.tasks`, whose docstring says how KFP's spelling is bridged.
The package runs as compiled under ``kfp.local`` too (``tests/pipelines/test_kfp_local.py``).
"""

# No ``from __future__ import annotations``: KFP reads the component signatures at runtime.

from pathlib import Path
from typing import Any

from kfp import compiler

from pipelines.build.kfp import grid, rounds
from pipelines.config import ConfigError, SweepConfig


class KfpUnsupported(ConfigError):
    """A pipeline KFP cannot run as configured (the problem names the config key)."""


def unsupported(cfg: SweepConfig) -> str | None:
    """Why KFP cannot run this pipeline, or None. A KFP task is one pod: a trial on several nodes
    (``resources.nodes`` > 1, a JobSet on Argo) has no KFP equivalent here."""
    if cfg.resources.nodes > 1:
        return (
            f"resources.nodes is {cfg.resources.nodes}: a KFP task is one pod, so KFP cannot run a "
            "multi-node trial; run this pipeline on Argo (BACKEND=argo: each trial a JobSet) or "
            "set resources.nodes: 1"
        )
    return None


def build(cfg: SweepConfig) -> Any:
    """The sweep's KFP pipeline (a ``GraphComponent``), parameters defaulting to the config.

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    why = unsupported(cfg)
    if why is not None:
        raise KfpUnsupported(f"pipelines/{cfg.name}.yaml (KFP)", [("resources.nodes", why)])
    return rounds.build(cfg) if cfg.search.adaptive else grid.build(cfg)


def compile_package(cfg: SweepConfig, path: Path) -> None:
    """Write the package a user uploads in the Kubeflow UI (deterministic: golden-file safe).

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    pipeline = build(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))

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
    (``resources.nodes`` > 1, a JobSet on Argo) has no KFP equivalent here, nor do pods that run
    several trials in turn (``search.trials_per_pod`` > 1: unrolled KFP rounds are one task per
    trial)."""
    found = _refusal(cfg)
    return None if found is None else found[1]


def _refusal(cfg: SweepConfig) -> tuple[str, str] | None:
    """The config key KFP cannot honour and why, or None."""
    if cfg.resources.nodes > 1:
        return "resources.nodes", (
            f"resources.nodes is {cfg.resources.nodes}: a KFP task is one pod, so KFP cannot run a "
            "multi-node trial; run this pipeline on Argo (BACKEND=argo: each trial a JobSet) or "
            "set resources.nodes: 1"
        )
    if cfg.search.trials_per_pod > 1:
        return "search.trials_per_pod", (
            f"search.trials_per_pod is {cfg.search.trials_per_pod}: the KFP rounds run one trial "
            "per task, so KFP cannot reuse a pod for several trials; run this pipeline on Argo or "
            "locally (BACKEND=argo or the local backend) or set search.trials_per_pod: 1"
        )
    return None


def build(cfg: SweepConfig) -> Any:
    """The sweep's KFP pipeline (a ``GraphComponent``), parameters defaulting to the config.

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    found = _refusal(cfg)
    if found is not None:
        raise KfpUnsupported(f"pipelines/{cfg.name}.yaml (KFP)", [found])
    return rounds.build(cfg) if cfg.search.adaptive else grid.build(cfg)


def compile_package(cfg: SweepConfig, path: Path) -> None:
    """Write the package a user uploads in the Kubeflow UI (deterministic: golden-file safe).

    Raises:
        KfpUnsupported: :func:`unsupported` says why KFP cannot run it.
    """
    pipeline = build(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))

"""Compiling a pipeline to a KFP package and reading its tasks and containers; the KFP package,
trainer config and duration tests share it. No tests here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.build.kfp import compile_package
from pipelines.config import SweepConfig


def compiled(cfg: SweepConfig, tmp_path: Path) -> tuple[str, Any, Any]:
    path = tmp_path / f"{cfg.name}.kfp.yaml"
    compile_package(cfg, path)
    text = path.read_text()
    pipeline_doc, platform_doc = yaml.safe_load_all(text)
    spec = json_format.ParseDict(pipeline_doc, pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    return text, spec, platform


def container(spec: Any, step: str) -> dict[str, Any]:
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    return dict(executors[f"exec-{step}"]["container"])


def tasks(spec: Any) -> dict[str, Any]:
    """Every task of every DAG in the package, by name."""
    found = dict(spec.root.dag.tasks)
    for comp in spec.components.values():
        if comp.WhichOneof("implementation") == "dag":
            found.update(comp.dag.tasks)
    return found

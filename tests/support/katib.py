"""Katib Experiments for the import tests: Katib's own examples (shared/katib), one written here
(experiment), and what importing gives (imported, refused). No tests here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.config import parse_config
from pipelines.importers.katib import KatibImportError, convert

REPO = Path(__file__).resolve().parents[2]

KATIB = Path(__file__).resolve().parents[3] / "shared" / "katib"

CONTAINER = "spec.trialTemplate.trialSpec.spec.template.spec.containers[0]"

COLLECTOR = "spec.metricsCollectorSpec"


def experiment(name: str = "inline") -> dict[str, Any]:
    """A small Job-trial Experiment (random search over lr), to vary per test."""
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": 6,
            "maxFailedTrialCount": 1,
            "parameters": [
                {"name": "lr", "parameterType": "double",
                 "feasibleSpace": {"min": "0.01", "max": "0.1"}},
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "learningRate", "reference": "lr"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "main",
                            "image": "example.com/team/train:1",
                            "command": ["python3", "/app/train.py"],
                            "args": ["--lr=${trialParameters.learningRate}"],
                        }],
                    }}},
                },
            },
        },
    }  # fmt: skip


def container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    return spec["containers"][0]  # type: ignore[no-any-return]


def imported(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The converted config (checked as any config is) and the notes."""
    cfg, notes = convert(doc)
    parse_config(cfg, source="imported")
    return cfg, notes


def refused(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(KatibImportError) as err:
        convert(doc)
    return dict(err.value.problems)

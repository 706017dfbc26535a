"""The reference trainer's model: a small MLP classifier, rebuilt from its ``model_config``.

``model.pt`` holds ``{"state_dict": ..., "model_config": {...}}``; :func:`build_model` turns the config
back into the module so the compare step can load the best trial's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

MODEL_KINDS = ("mlp",)


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training set's statistics kept as buffers (saved with the weights)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(model_config: Mapping[str, Any]) -> nn.Sequential:
    """The module described by ``model_config`` (weights freshly initialised).

    Keys: ``kind`` ("mlp"), ``input_dim``, ``hidden``, ``depth`` (hidden layers), ``num_classes``.

    Raises:
        ValueError: an unknown kind, or a missing or non-positive size (the message names it).
    """
    kind = model_config.get("kind", "mlp")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model_config.kind: unknown model kind {kind!r} (known: {MODEL_KINDS})")
    sizes = {}
    for key in ("input_dim", "hidden", "depth", "num_classes"):
        value = model_config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model_config.{key}: expected a positive integer, got {value!r}")
        sizes[key] = value
    layers: list[nn.Module] = [Standardize(sizes["input_dim"])]
    width = sizes["input_dim"]
    for _ in range(sizes["depth"]):
        layers += [nn.Linear(width, sizes["hidden"]), nn.ReLU()]
        width = sizes["hidden"]
    layers.append(nn.Linear(width, sizes["num_classes"]))
    return nn.Sequential(*layers)


def load_model(path: str, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trial's final ``model.pt``: the module (eval mode) and its ``model_config``."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(blob["model_config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, dict(blob["model_config"])

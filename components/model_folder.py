"""A trial's final model: the folder a trainer leaves, whatever its framework.

``sweeps/<sweep>/trials/<trial>/model/`` holds what the trainer saved: for a PyTorch module,
``model.pt`` (TorchScript: loads with ``torch.jit.load`` without the trainer's class, when the module
scripts) and ``weights.pt`` (its state dict); for anything else, the files the trainer gave (a
command trainer writes into ``$SWEEPYARD_MODEL_DIR``). The compare step registers the folder of the
best trial in the MLflow Model Registry without knowing the model's class.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

TORCHSCRIPT = "model.pt"
WEIGHTS = "weights.pt"


def _save(obj: object, path: Path, *, script: bool = False) -> None:
    import torch

    with open(path, "wb") as f:
        if script:
            torch.jit.save(obj, f)  # type: ignore[no-untyped-call]
        else:
            torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_module(model: nn.Module, folder: Path) -> None:
    """Write ``weights.pt`` (CPU state dict) and, when the module scripts, TorchScript ``model.pt``."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    _save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    try:
        scripted = torch.jit.script(copy.deepcopy(model).cpu().eval())
    except Exception as exc:  # noqa: BLE001 - any scripting failure only costs the TorchScript copy
        log.warning("the model does not script (%s): only its weights are saved", exc)
    else:
        _save(scripted, folder / TORCHSCRIPT, script=True)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of a saved module's folder."""
    import torch

    weights: dict[str, torch.Tensor] = torch.load(folder / WEIGHTS, weights_only=True)
    return weights


def load_torchscript(folder: Path) -> nn.Module:
    """The TorchScript module of a saved folder (no trainer class needed), in eval mode."""
    import torch

    module: Any = torch.jit.load(str(folder / TORCHSCRIPT), map_location="cpu")  # type: ignore[no-untyped-call]
    return module.eval()  # type: ignore[no-any-return]

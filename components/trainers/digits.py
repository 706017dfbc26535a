"""The reference trainer: an MLP classifier on the data stage's table, trained with AdamW.

``trainer: {function: components.trainers.digits:train}`` in ``pipelines/sweep.yaml``. It only
trains: resume, RNG states, checkpoint files, tracking and SIGTERM are the supervisor's
(:mod:`components.train`). Deterministic on CPU for a given seed, interruptions or not.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.api import GiveUp, Trial, reports
from components.runtime.rng import seed_everything
from components.trainers.digits_data import DataError, EpochSampler, load_dataset

log = logging.getLogger("components.train")


@dataclass(frozen=True)
class DigitsParams:
    """The trial params the reference trainer accepts (anything else is rejected)."""

    lr: float
    hidden: int
    batch_size: int
    steps: int
    seed: int
    weight_decay: float = 0.0
    eval_every: int = 50
    depth: int = 1

    def __post_init__(self) -> None:
        for name in ("hidden", "batch_size", "steps", "eval_every", "depth"):
            if getattr(self, name) < 1:
                raise GiveUp(f"trial param {name!r} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise GiveUp(
                f"trial params: lr must be > 0 and weight_decay >= 0, "
                f"got {self.lr}, {self.weight_decay}"
            )


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


def build_model(config: Mapping[str, int]) -> nn.Sequential:
    """The MLP of ``config`` (``input_dim``, ``hidden``, ``depth``, ``num_classes``), fresh weights."""
    layers: list[nn.Module] = [Standardize(config["input_dim"])]
    width = config["input_dim"]
    for _ in range(config["depth"]):
        layers += [nn.Linear(width, config["hidden"]), nn.ReLU()]
        width = config["hidden"]
    layers.append(nn.Linear(width, config["num_classes"]))
    return nn.Sequential(*layers)


@reports("train_loss", "val_loss", "val_accuracy")
def train(trial: Trial, params: DigitsParams) -> None:
    """Train (or resume) the MLP to ``params.steps``; logs train_loss, val_loss, val_accuracy."""
    p, device = params, trial.device
    if trial.data is None:
        raise GiveUp("the digits trainer needs a dataset: set `data` in the sweep config")
    try:
        with trial.span("data"):
            data = load_dataset(trial.data)
    except DataError as exc:
        raise GiveUp(str(exc)) from exc
    seed_everything(p.seed)
    config = {"input_dim": data.num_features, "hidden": p.hidden, "depth": p.depth}
    model = build_model({**config, "num_classes": data.num_classes})
    norm = model[0]
    assert isinstance(norm, Standardize)
    norm.mean.copy_(data.x_train.mean(0))
    norm.std.copy_(data.x_train.std(0).clamp_min(1e-3))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sampler = EpochSampler(len(data.x_train), p.batch_size, p.seed)
    if trial.state is not None:
        model.load_state_dict(trial.state["model"])
        optimizer.load_state_dict(trial.state["optimizer"])
        sampler.load_state_dict(trial.state["sampler"])
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def state() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sampler": sampler.state_dict(),
        }

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        with autocast:
            logits = model(x_val).float()
        model.train()
        return {
            "val_loss": F.cross_entropy(logits, y_val).item(),
            "val_accuracy": (logits.argmax(1) == y_val).float().mean().item(),
        }

    log.info("training from step %d to %d on %s", trial.start_step, p.steps, device)
    for step in range(trial.start_step + 1, p.steps + 1):
        idx = sampler.next()
        with autocast:
            loss = F.cross_entropy(model(x_train[idx]).float(), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        trial.log(step, {"train_loss": loss})
        if step % p.eval_every == 0 or step == p.steps:
            trial.log(step, evaluate())
        trial.checkpoint(step, state)
    trial.save_model(model)

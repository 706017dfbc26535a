"""The small model and data the example programs share: an MLP on scikit-learn's digits.

The programs beside this file are written the way teams write training scripts (argparse, prints,
files in the current folder), and know nothing of sweepyard: they are swept unchanged, with YAML
only (``pipelines/plain-stdout.yaml``, ``pipelines/plain-tensorboard.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

VAL_FRACTION = 0.2


def load_digits(folder: str | None = None) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): from the CSV tables in ``folder`` (features, then the
    label), or from the copy of digits that scikit-learn ships."""
    if folder:
        files = sorted([*Path(folder).glob("*.csv"), *Path(folder).glob("*.csv.gz")])
        if not files:
            raise SystemExit(f"no *.csv or *.csv.gz table in {folder}")
        table = np.concatenate([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
        x, y = table[:, :-1], table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits as sklearn_digits

        x, y = sklearn_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    n_val = round(len(x) * VAL_FRACTION)
    xs = torch.tensor(x / 16.0, dtype=torch.float32)
    ys = torch.tensor(y, dtype=torch.long)
    val, train = torch.tensor(perm[:n_val]), torch.tensor(perm[n_val:])
    return xs[train], ys[train], xs[val], ys[val]


def mlp(hidden: int, classes: int = 10, features: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def epoch(
    model: nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...]
) -> tuple[float, float, float]:
    """One full-batch step; (train loss, val loss, val accuracy)."""
    x, y, xv, yv = data
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        out = model(xv)
        val = nn.functional.cross_entropy(out, yv).item()
        acc = (out.argmax(1) == yv).float().mean().item()
    return loss.item(), val, acc

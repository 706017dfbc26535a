"""The reference trainer's dataset: numeric tables in a folder, a deterministic split, a resumable sampler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPLIT_SEED = 0
VAL_FRACTION = 0.2
PATTERNS = ("*.csv", "*.csv.gz", "*.parquet")


class DataError(ValueError):
    """The data folder is missing, empty or malformed (the message names the file)."""


@dataclass
class Dataset:
    """Train/val tensors: features float32, labels int64 (classes ``0..num_classes-1``)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    files: list[str]

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def _read_table(path: Path) -> np.ndarray:
    try:
        if path.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return np.column_stack(
                [c.to_numpy(zero_copy_only=False) for c in table.columns]
            ).astype(np.float64)
        return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a numeric table without header: {exc}") from exc


def data_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"--data {folder}: no such folder")
    files = sorted({p for pattern in PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise DataError(f"--data {folder}: no *.csv, *.csv.gz or *.parquet file in it")
    return files


def load_dataset(folder: Path) -> Dataset:
    """Read every table in ``folder`` (sorted by name); the last column is the integer label.

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    files = data_files(Path(folder))
    tables: list[np.ndarray] = []
    for path in files:
        table = _read_table(path)
        if table.shape[1] < 2:
            raise DataError(f"{path}: needs at least one feature column and the label column")
        if tables and table.shape[1] != tables[0].shape[1]:
            raise DataError(
                f"{path}: {table.shape[1]} columns, but {files[0].name} has {tables[0].shape[1]}"
            )
        if not np.isfinite(table).all():
            raise DataError(f"{path}: contains NaN or infinite values")
        labels = table[:, -1]
        if not np.array_equal(labels, np.round(labels)) or labels.min() < 0:
            raise DataError(f"{path}: the last column must hold non-negative integer class labels")
        tables.append(table)
    data = np.concatenate(tables)
    if len(data) < 2:
        raise DataError(f"--data {folder}: needs at least 2 rows, found {len(data)}")
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(data))
    n_val = max(1, int(round(len(data) * VAL_FRACTION)))
    val, train = data[perm[:n_val]], data[perm[n_val:]]
    x = torch.from_numpy(train[:, :-1].astype(np.float32))
    return Dataset(
        x_train=x,
        y_train=torch.from_numpy(train[:, -1].astype(np.int64)),
        x_val=torch.from_numpy(val[:, :-1].astype(np.float32)),
        y_val=torch.from_numpy(val[:, -1].astype(np.int64)),
        num_classes=int(data[:, -1].max()) + 1,
        files=[p.name for p in files],
    )


class EpochSampler:
    """Mini-batch indices: a fresh permutation each epoch, seeded by ``(seed, epoch)``; resumable.

    The state is just ``{"epoch", "position"}``: the permutation is recomputed on resume.
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.size = size
        self.batch_size = min(batch_size, size)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.size, generator=gen)
        return self._perm

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.size:
            self.epoch += 1
            self.position = 0
            self._perm = None
        idx = self._permutation()[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm = None

"""A character-level transformer language model, swept through sweepyard's Python contract.

The data is any text: every file of the fetched data folder (by name), read as bytes. The
pipeline ``pipelines/charlm.yaml`` fetches ``pkg://pydoc_data/topics.py`` (the Python language
reference that ships with CPython, ~750 KB), so nothing is downloaded. The first 90% trains, the
last 10% validates. Metrics: ``train_loss`` every step, ``val_loss`` (nats per byte) and ``val_bpc``
(bits per byte) every ``eval_every`` steps and at the last step. Deterministic on CPU for a seed,
interrupted or not: the checkpoint holds the model, the optimizer and the batch sampler's generator.

With more than one process (``--nproc-per-node``/``--nnodes``: ``trial.world_size > 1``) it trains
with DistributedDataParallel: each rank samples its own windows (a generator seeded by the seed and
the rank), gradients are averaged, rank 0 evaluates and keeps the model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from components.api import GiveUp, Trial, reports
from examples.charlm.model import CharTransformer

log = logging.getLogger("examples.charlm")
SKIP = {"MANIFEST.json", ".complete"}
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class CharLMParams:
    """The trial params this trainer accepts (the sweep's search space is checked against it)."""

    lr: float = 3e-3
    steps: int = 300
    batch_size: int = 16
    block_size: int = 64
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    weight_decay: float = 0.01
    warmup: int = 20
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0


def load_text(folder: Path) -> torch.Tensor:
    """Every file of the data folder, sorted by name, as one tensor of byte values."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in SKIP)
    if not files:
        raise GiveUp(f"data folder {folder}: no files in it")
    raw = b"".join(p.read_bytes() for p in files)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


class WindowSampler:
    """Random training windows of ``block_size + 1`` bytes; resumable through its generator."""

    def __init__(
        self, text: torch.Tensor, batch_size: int, block_size: int, seed: int, rank: int = 0
    ) -> None:
        self.text, self.batch_size, self.block_size = text, batch_size, block_size
        self.gen = torch.Generator().manual_seed(seed + 1_000_003 * rank)  # rank 0: the seed

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(
            len(self.text) - self.block_size - 1, (self.batch_size,), generator=self.gen
        )
        rows = torch.stack([self.text[s : s + self.block_size + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])


def check(p: CharLMParams) -> None:
    """Raise GiveUp naming the first param out of range."""
    for name in ("steps", "batch_size", "block_size", "d_model", "n_layer", "n_head"):
        if getattr(p, name) < 1:
            raise GiveUp(f"trial param {name!r} must be at least 1, got {getattr(p, name)}")
    if p.d_model % p.n_head:
        raise GiveUp(f"trial param 'n_head' ({p.n_head}) must divide 'd_model' ({p.d_model})")
    if not p.lr > 0 or p.weight_decay < 0 or p.eval_every < 1 or p.eval_batches < 1:
        raise GiveUp("trial params: lr > 0, weight_decay >= 0, eval_every/eval_batches >= 1")


def lr_at(p: CharLMParams, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth of ``lr`` (a function of the step alone)."""
    if step < p.warmup:
        return p.lr * (step + 1) / p.warmup
    progress = (step - p.warmup) / max(1, p.steps - p.warmup)
    return p.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def split(text: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_val = max(block_size + 2, int(len(text) * VAL_FRACTION))
    if len(text) - n_val < block_size + 2:
        raise GiveUp(f"the text has {len(text)} bytes: too short for block_size={block_size}")
    return text[:-n_val], text[-n_val:]


def val_batches(val: torch.Tensor, p: CharLMParams) -> list[torch.Tensor]:
    """Fixed validation windows, evenly spaced over the held-out text."""
    count = p.eval_batches * p.batch_size
    starts = torch.linspace(0, len(val) - p.block_size - 1, count).long().tolist()
    rows = torch.stack([val[s : s + p.block_size + 1] for s in starts])
    return list(rows.split(p.batch_size))


@reports("train_loss", "val_loss", "val_bpc")
def train(trial: Trial, params: CharLMParams) -> None:
    """Train (or resume) one trial to ``params.steps``; save the model and report val metrics."""
    p = params
    check(p)
    device = trial.device
    train_text, val_text = split(load_text(trial.data), p.block_size)
    torch.manual_seed(p.seed)  # the same initial weights on every rank
    model = CharTransformer(p.block_size, p.d_model, p.n_layer, p.n_head).to(device)
    net: torch.nn.Module = model
    if trial.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # On CPU the promise is bitwise: DDP rebuilds its gradient buckets after the first step in
        # the order gradients became ready, so a resumed run's first step would all-reduce in
        # other buckets (another summation order on 3+ ranks) than the uninterrupted run's;
        # find_unused_parameters keeps the first layout for good (at one graph walk per step).
        cpu = device.type == "cpu"
        net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=cpu)
    opt = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sampler = WindowSampler(train_text, p.batch_size, p.block_size, p.seed, trial.rank)

    def state() -> dict[str, Any]:
        return {"model": net, "opt": opt, "sampler": sampler}

    trial.restore(state)  # resumed: model, optimizer, sampler and RNG states, in place
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    val = [b.to(device) for b in val_batches(val_text, p)]

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        total = 0.0
        for rows in val:
            with autocast:
                logits = model(rows[:, :-1]).float()
            total += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
        model.train()
        loss = total / len(val)
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}

    model.train()
    log.info("charlm: training steps %d..%d on %s", trial.start_step + 1, p.steps, device)
    for step in range(trial.start_step, p.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(p, step)
        x, y = (t.to(device, non_blocking=True) for t in sampler.next())
        with autocast:
            logits = net(x).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # (DDP: gradients averaged over the ranks)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        trial.log(step + 1, {"train_loss": loss.detach()})
        if trial.is_main and ((step + 1) % p.eval_every == 0 or step + 1 == p.steps):
            trial.log(step + 1, evaluate())
        trial.checkpoint(step + 1, state)
    if trial.is_main:  # rank 0 evaluates and keeps the model
        trial.save_model(model)
        trial.result(evaluate())

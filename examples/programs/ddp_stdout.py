#!/usr/bin/env python3
"""A tiny data-parallel regression under torchrun: gloo, gradients averaged, Katib-style lines.

    torchrun --nproc-per-node 2 ddp_stdout.py --lr 0.1 --steps 20

Every rank fits ``y = 3x - 1`` on its own random batches (seeded by the rank); rank 0 prints
``step=N loss=...`` after each step. Knows nothing of any sweep tool: it reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) through
``init_process_group``.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(1000 + rank)
    for step in range(1, args.steps + 1):
        x = torch.rand(args.batch_size, 1, generator=gen) * 2 - 1
        loss = torch.nn.functional.mse_loss(model(x), 3 * x - 1)
        opt.zero_grad()
        loss.backward()
        for p in model.parameters():  # average the gradients over the ranks
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= world
        opt.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            print(f"step={step} loss={total.item() / world:.6f} world_size={world}", flush=True)
    if rank == 0:
        print(f"done on {world} ranks (local rank {os.environ.get('LOCAL_RANK')})", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train an MLP on digits and print Katib-style ``name=value`` lines, one per epoch.

    python mlp_stdout.py --lr 0.1 --hidden 32 --epochs 60 [--data DIR]

Checkpoints to ``checkpoint.pt`` in the current folder after every epoch and continues from it when
started again; saves ``model.pt`` there at the end. Knows nothing of any sweep tool.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from digits_mlp import epoch, load_digits, mlp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument(
        "--data", default=None, help="a folder of CSV tables (default: sklearn's digits)"
    )
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds per epoch (to watch it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_digits(args.data)
    model = mlp(args.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    start = 0
    if os.path.exists("checkpoint.pt"):
        state = torch.load("checkpoint.pt")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"]
        print(f"resuming from epoch {start}")
    print(f"training: lr={args.lr} hidden={args.hidden} epochs={args.epochs}")
    for n in range(start + 1, args.epochs + 1):
        loss, val, acc = epoch(model, opt, data)
        print(f"step={n} loss={loss:.5f} val_loss={val:.5f} val_accuracy={acc:.4f}", flush=True)
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": n}, "checkpoint.tmp"
        )
        os.replace("checkpoint.tmp", "checkpoint.pt")
        time.sleep(args.sleep)
    torch.save(model.state_dict(), "model.pt")


if __name__ == "__main__":
    main()

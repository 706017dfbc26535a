#!/usr/bin/env python3
"""Train an MLP on digits, printing a free-form log, and evaluate the saved model at the end.

    python mlp_freeform.py --lr 0.1 --hidden 32 --epochs 60 --save model.pt

Each epoch prints ``| epoch   3 | train loss 0.4123 | valid loss 0.4456 |``; the best model so far is
saved to ``--save`` (relative to the current folder), reloaded at the end and evaluated:
``| end of training | test loss 0.4011 | hidden 32 |``. No checkpoint: started again, it starts
from scratch.
"""

from __future__ import annotations

import argparse
import time

import torch
from digits_mlp import epoch, load_digits, mlp
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--save", default="model.pt")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds per epoch (to watch it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_digits()
    model = mlp(args.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    best = float("inf")
    for n in range(1, args.epochs + 1):
        loss, val, _ = epoch(model, opt, data)
        print(f"| epoch {n:3d} | train loss {loss:.4f} | valid loss {val:.4f} |", flush=True)
        if val < best:
            best = val
            torch.save(model, args.save)
        time.sleep(args.sleep)
    saved = torch.load(args.save, weights_only=False)
    hidden = saved[0].out_features
    with torch.no_grad():
        test = nn.functional.cross_entropy(saved(data[2]), data[3]).item()
    print(f"| end of training | test loss {test:.4f} | hidden {hidden} |", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train an MLP on digits and write its curves only as TensorBoard events (``runs/``).

    python mlp_tensorboard.py --lr 0.1 --hidden 32 --epochs 60

Prints nothing per epoch, keeps no checkpoint (started again, it starts from scratch) and saves no
model: its only output is ``SummaryWriter()``'s default folder, ``runs/<date>_<host>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from digits_mlp import epoch, load_digits, mlp
from torch.utils.tensorboard import SummaryWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds per epoch (to watch it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_digits()
    model = mlp(args.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    writer = SummaryWriter(flush_secs=1)
    for n in range(1, args.epochs + 1):
        loss, val, acc = epoch(model, opt, data)
        writer.add_scalar("loss", loss, n)
        writer.add_scalar("val_loss", val, n)
        writer.add_scalar("val_accuracy", acc, n)
        time.sleep(args.sleep)
    writer.close()


if __name__ == "__main__":
    main()

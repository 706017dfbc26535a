#!/usr/bin/env python3
"""Gradient boosting (LightGBM) swept through sweepyard's command contract: it never imports sweepyard.

    python -u boost.py --eta 0.1 --rounds 200 [--num-leaves 15] [--seed 0]

What the harness gives it, in its environment:

- ``SWEEPYARD_DATA``: the fetched data folder; every ``*.csv`` / ``*.csv.gz`` table in it, numeric,
  no header, the last column the integer class label (the pipeline fetches scikit-learn's digits);
- ``SWEEPYARD_CHECKPOINT_DIR``: the same folder on every attempt; the booster is saved there every
  ``--checkpoint-every`` rounds and on SIGTERM (written to a temporary file, then renamed), and
  training continues from it on the next attempt;
- ``SWEEPYARD_METRICS``: a JSON lines file; one line per round ``{"step", "train_loss", "val_loss",
  "val_accuracy"}`` (a round written again after a resume is delivered once by the harness);
- ``SWEEPYARD_MODEL_DIR``: where the final ``model.txt`` goes (registered if the trial is the best).

Deterministic on CPU: one thread, no bagging, so a resumed run ends with the same model, byte for byte.
Exit codes: 0 done, 143 stopped by SIGTERM (state saved), 2 bad arguments or data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import lightgbm as lgb
import numpy as np

CHECKPOINT = "booster.txt"
SPLIT_SEED = 0
VAL_FRACTION = 0.2


def env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"boost.py: ${name} is not set (run it through sweepyard, or set it by hand)")
    return Path(value)


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every table in the folder; a fixed split (train, val) of features and labels."""
    files = sorted([*folder.glob("*.csv"), *folder.glob("*.csv.gz")])
    if not files:
        sys.exit(f"boost.py: no *.csv or *.csv.gz table in {folder}")
    data = np.concatenate([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(data))
    n_val = max(1, round(len(data) * VAL_FRACTION))
    val, train = data[perm[:n_val]], data[perm[n_val:]]
    return train[:, :-1], train[:, -1].astype(int), val[:, :-1], val[:, -1].astype(int)


def save_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half of it (temp, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="boost.py", description=__doc__.splitlines()[0])
    ap.add_argument("--eta", type=float, required=True, help="learning rate")
    ap.add_argument("--rounds", type=int, required=True, help="boosting rounds")
    ap.add_argument("--num-leaves", type=int, default=15)
    ap.add_argument("--min-data-in-leaf", type=int, default=20)
    ap.add_argument("--lambda-l2", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=10, help="rounds between saves")
    args = ap.parse_args(argv)
    if args.eta <= 0 or args.rounds < 1 or args.num_leaves < 2 or args.checkpoint_every < 1:
        ap.error("--eta > 0, --rounds >= 1, --num-leaves >= 2, --checkpoint-every >= 1")
    return args


def booster_params(args: argparse.Namespace, num_class: int) -> dict[str, Any]:
    return {
        "objective": "multiclass",
        "num_class": num_class,
        "metric": ["multi_logloss", "multi_error"],
        "learning_rate": args.eta,
        "num_leaves": args.num_leaves,
        "min_data_in_leaf": args.min_data_in_leaf,
        "lambda_l2": args.lambda_l2,
        "seed": args.seed,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


class Stopped(Exception):
    """SIGTERM arrived: the booster was saved at a round boundary."""


def round_logger(
    args: argparse.Namespace, metrics: TextIO, ckpt: Path, stop: dict[str, bool]
) -> Callable[[lgb.callback.CallbackEnv], None]:
    """The callback after each round: a metrics line, the checkpoint when due, the SIGTERM check."""

    def after_round(env: lgb.callback.CallbackEnv) -> None:
        step = env.iteration + 1
        res = {(name, metric): value for name, metric, value, *_ in env.evaluation_result_list}
        line = {
            "step": step,
            "train_loss": res["train", "multi_logloss"],
            "val_loss": res["val", "multi_logloss"],
            "val_accuracy": 1.0 - res["val", "multi_error"],
        }
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()
        if stop["requested"] or step % args.checkpoint_every == 0 or step == args.rounds:
            save_atomic(ckpt, env.model.model_to_string())
        if stop["requested"]:
            raise Stopped(step)
        if step == args.rounds:  # a resumed run: same num_iterations in the model as uninterrupted
            raise lgb.callback.EarlyStopException(step - 1, env.evaluation_result_list)

    return after_round


def main(argv: list[str]) -> int:
    args = parse(argv)
    data, ckpt_dir = env_path("SWEEPYARD_DATA"), env_path("SWEEPYARD_CHECKPOINT_DIR")
    metrics_path, model_dir = env_path("SWEEPYARD_METRICS"), env_path("SWEEPYARD_MODEL_DIR")
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    x_tr, y_tr, x_val, y_val = load(data)
    params = booster_params(args, int(max(y_tr.max(), y_val.max())) + 1)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / CHECKPOINT
    booster = lgb.Booster(model_file=str(ckpt)) if ckpt.exists() else None
    done = booster.current_iteration() if booster is not None else 0
    print(f"boost.py: training rounds {done + 1}..{args.rounds}", flush=True)
    if done < args.rounds:
        train_set = lgb.Dataset(x_tr, y_tr, free_raw_data=False)
        val_set = lgb.Dataset(x_val, y_val, reference=train_set, free_raw_data=False)
        with open(metrics_path, "a") as metrics:
            try:
                booster = lgb.train(
                    params,
                    train_set,
                    num_boost_round=args.rounds,
                    init_model=booster,
                    valid_sets=[train_set, val_set],
                    valid_names=["train", "val"],
                    callbacks=[round_logger(args, metrics, ckpt, stop)],
                    keep_training_booster=True,
                )
            except Stopped as exc:
                print(f"boost.py: SIGTERM, saved round {exc.args[0]}, exiting", flush=True)
                return 143
    assert booster is not None
    model_dir.mkdir(parents=True, exist_ok=True)
    # Saved once and loaded again, so that trees trained now and trees loaded from a checkpoint
    # serialise alike (LightGBM writes a one-leaf tree's weights differently after a load).
    canonical = lgb.Booster(model_str=booster.model_to_string()).model_to_string()
    save_atomic(model_dir / "model.txt", canonical)
    print(f"boost.py: done, {booster.current_iteration()} rounds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

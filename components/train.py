"""The reference trainer: one trial of the sweep (``python -m components.train ...``).

An MLP classifier on the data stage's table, trained with AdamW. Everything that makes it survive
spot nodes lives in :class:`components.runtime.harness.Harness`: it resumes from the newest good
checkpoint by itself, logs every step to TensorBoard and MLflow without blocking, checkpoints every
``--checkpoint-interval`` seconds, and stops cleanly on SIGTERM. Exit codes: see
:mod:`components.runtime.trial`. Deterministic on CPU for a given seed, interruptions or not.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from components.contract import EXIT_GIVE_UP, resolve_sweep_id, trial_dir, trial_id
from components.data import DataError, EpochSampler, load_dataset
from components.fsio import atomic_write_with
from components.model import Standardize, build_model
from components.runtime.alerts import init_alerts
from components.runtime.harness import Harness
from components.runtime.trial import AttemptLog, GiveUp, StopSignal, shared_root
from components.runtime.trial_run import METRICS, TrialSpec, run_trial

__all__ = ["TrainParams", "TrialSpec", "build_model", "main", "train"]

log = logging.getLogger("components.train")


@dataclass(frozen=True)
class TrainParams:
    """The trial params the reference trainer accepts (anything else is rejected)."""

    lr: float
    hidden: int
    batch_size: int
    steps: int
    seed: int
    weight_decay: float = 0.0
    eval_every: int = 50
    depth: int = 1

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainParams:
        """Validate trial params. Raises GiveUp naming the unknown, missing or bad param."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise GiveUp(f"unknown trial param {unknown[0]!r} (known: {', '.join(known)})")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name not in params:
                if f.default is MISSING:  # no default: required
                    raise GiveUp(f"trial param {name!r} is missing")
                continue
            value = params[name]
            if f.type == "int":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or value != int(value)
                ):
                    raise GiveUp(f"trial param {name!r} must be an integer, got {value!r}")
                value = int(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise GiveUp(f"trial param {name!r} must be a number, got {value!r}")
            values[name] = value
        p = cls(**values)
        for name in ("hidden", "batch_size", "steps", "eval_every", "depth"):
            if getattr(p, name) < 1:
                raise GiveUp(f"trial param {name!r} must be at least 1, got {getattr(p, name)}")
        if not p.lr > 0 or p.weight_decay < 0:
            raise GiveUp(
                f"trial params: lr must be > 0 and weight_decay >= 0, got {p.lr}, {p.weight_decay}"
            )
        return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(spec: TrialSpec, harness: Harness, attempt: AttemptLog) -> tuple[int, dict[str, float]]:
    """Run (or resume) the trial to its last step; returns ``(step, final metrics)``.

    Raises:
        Preempted: SIGTERM arrived (the state was saved if the write fit the grace period).
        GiveUp: bad params or data.
    """
    p = TrainParams.from_dict(spec.params)
    device = torch.device(
        "cuda"
        if spec.device == "auto" and torch.cuda.is_available()
        else ("cpu" if spec.device == "auto" else spec.device)
    )
    if device.type == "cpu":
        torch.set_num_threads(spec.threads)
    try:
        data = load_dataset(spec.data)
    except DataError as exc:
        raise GiveUp(str(exc)) from exc
    seed_everything(p.seed)
    model_config = {
        "kind": "mlp",
        "input_dim": data.num_features,
        "hidden": p.hidden,
        "depth": p.depth,
        "num_classes": data.num_classes,
    }
    model = build_model(model_config)
    norm = model[0]
    assert isinstance(norm, Standardize)
    norm.mean.copy_(data.x_train.mean(0))
    norm.std.copy_(data.x_train.std(0).clamp_min(1e-3))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sampler = EpochSampler(len(data.x_train), p.batch_size, p.seed)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    config = {"params": spec.params, "model_config": model_config}
    last: dict[str, float] = {}

    def state() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sampler": sampler.state_dict(),
            "rng": rng_state(),
        }

    def extra() -> dict[str, Any]:
        return {"config": config, "metrics": dict(last)}

    step = harness.start_step
    if harness.resumed is not None:
        saved = harness.resumed.state
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        sampler.load_state_dict(saved["sampler"])
        set_rng_state(saved["rng"])
        last.update(harness.resumed.extra.get("metrics", {}))

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

    if device.type == "cuda":
        harness.checkpoints.reserve(state())  # pinned host buffers, allocated once
    log.info("training from step %d to %d on %s", step, p.steps, device)
    harness.start_clock()
    while step < p.steps:
        if harness.stop.requested:
            harness.preempt(step, state, extra=extra(), metric=last.get(spec.objective))
        idx = sampler.next()
        with autocast:
            loss = F.cross_entropy(model(x_train[idx]).float(), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        harness.log(step, {"train_loss": loss})
        if step % p.eval_every == 0 or step == p.steps:
            last["train_loss"] = loss.item()
            last.update(evaluate())
            harness.log(step, {k: last[k] for k in ("val_loss", "val_accuracy")})
        if step == p.steps:  # the final step: HParams now, so a resumed trial never logs it twice
            harness.logger.hparams({**spec.params, "trial_id": spec.trial_id}, last, step)
        if step == p.steps or harness.checkpoint_due():
            harness.save(step, state(), extra=extra(), metric=last.get(spec.objective))
    harness.checkpoints.wait()
    if not last:  # resumed from the final checkpoint of a run that stored no metrics
        last.update(evaluate())
    save_model(spec, model, model_config)
    return step, {k: float(last[k]) for k in METRICS if k in last}


def save_model(spec: TrialSpec, model: torch.nn.Module, model_config: dict[str, Any]) -> Path:
    """Write the final weights atomically as ``model.pt`` in the trial folder."""
    path = trial_dir(shared_root(), spec.sweep_id, spec.trial_id) / "model.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_with(
        path, lambda tmp: torch.save({"state_dict": state, "model_config": model_config}, tmp)
    )
    return path


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # bad command line = bad input: exit 3, never retried
        raise GiveUp(f"command line: {message}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = _Parser(prog="python -m components.train", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-id", default="", help='the sweep ("" = $SWEEPYARD_WORKFLOW_NAME)')
    ap.add_argument("--trial-id", required=True, help="components.contract.trial_id(params)")
    ap.add_argument("--params", required=True, help="the trial's params as JSON")
    ap.add_argument("--data", required=True, type=Path, help="folder of the fetched dataset")
    ap.add_argument("--data-hash", default="", help="content hash of the dataset (recorded)")
    ap.add_argument("--objective", default="val_loss", choices=METRICS)
    ap.add_argument("--direction", default="minimize", choices=("minimize", "maximize"))
    ap.add_argument("--checkpoint-interval", type=float, default=60.0, help="seconds")
    ap.add_argument("--keep-checkpoints", type=int, default=3)
    ap.add_argument(
        "--max-app-errors",
        type=int,
        default=3,
        help="application errors tolerated; the one that reaches it gives up (exit 3)",
    )
    ap.add_argument(
        "--flush-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for MLflow at the end before spooling the rest",
    )
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.keep_checkpoints < 1 or args.max_app_errors < 1 or args.checkpoint_interval < 0:
        raise GiveUp(
            "--keep-checkpoints and --max-app-errors must be >= 1, --checkpoint-interval >= 0"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        stop = StopSignal().install()
        args = parse_args(argv)
        sweep_id = resolve_sweep_id(args.sweep_id)
    except (GiveUp, ValueError) as exc:
        init_alerts("train")
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    init_alerts("train", sweep_id=sweep_id, trial_id=args.trial_id)
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise GiveUp(f"--params must be a JSON object, got {type(params).__name__}")
        if trial_id(params) != args.trial_id:
            raise GiveUp(
                f"--trial-id {args.trial_id} does not match the params "
                f"(their trial id is {trial_id(params)})"
            )
    except (GiveUp, ValueError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP
    spec = TrialSpec(
        sweep_id=sweep_id,
        trial_id=args.trial_id,
        params=params,
        data=args.data,
        data_hash=args.data_hash,
        objective=args.objective,
        direction=args.direction,
        checkpoint_interval=args.checkpoint_interval,
        keep_checkpoints=args.keep_checkpoints,
        max_app_errors=args.max_app_errors,
        flush_timeout=args.flush_timeout,
        device=args.device,
        threads=args.threads,
    )
    try:
        return run_trial(spec, stop, train, TrainParams.from_dict)
    except GiveUp as exc:
        print(f"train: {exc}", file=sys.stderr)
        return EXIT_GIVE_UP


if __name__ == "__main__":
    sys.exit(main())

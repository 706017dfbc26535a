"""Harness overhead on CPU: the same training loop bare, and under the trial harness.

The harness loop logs every step (TensorBoard + MLflow through a real server on loopback),
checkpoints every ``--checkpoint-interval`` seconds *of its own time* in the background, and checks
for SIGTERM at each step boundary. Both loops run the same model, data and seed in alternating
blocks of ``--block`` steps (which loop goes first alternates too), so both see the same load from
the rest of the machine. Each harness block ends inside its timing by waiting until MLflow has every
point logged so far and the checkpoint write is durable: no background work spills into the next
(bare) block. The loops use torch's default thread count, as a trainer would, so the harness's
threads compete with the training threads for the cores.

Each repetition is a fresh trial (new MLflow run, new checkpoint folder); after each one the server
is asked for the run's history, which must hold every logged step exactly once.

Target (issue 4): harness time / bare time <= 1.03, gated on the worse of the median per-repetition
ratio and the ratio of the median times (see ``benchmarks/_measure.py``). Exit status 1 when missed.

    .venv/bin/python benchmarks/bench_harness.py [--quick] [--steps 1500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks._measure import Comparison, Gate  # noqa: E402
from components.runtime import tracking  # noqa: E402
from components.runtime.harness import Harness  # noqa: E402

TARGET = 1.03


def make_model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    )
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def make_batches(n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch, 256, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(n)
    ]


def step_fn(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def open_harness(root: Path, uri: str, tag: str, interval: float) -> Harness:
    """A trial's harness, connected to MLflow before any timing (as a trial is while loading data)."""

    def connect() -> tuple[Any, str]:
        client = tracking.client(uri)
        run = tracking.ensure_trial_run(
            "bench", tag, experiment="bench-harness", mlflow_client=client
        )
        return client, run

    h = Harness(root / tag, tb_dir=root / "tb" / tag, connect=connect, checkpoint_interval=interval)
    assert h.sender is not None
    deadline = time.monotonic() + 120
    while not h.sender.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    if not h.sender.connected:
        raise SystemExit(f"no MLflow run after 120 s: {h.sender.last_error}")
    return h


def interleaved(
    steps: int, block: int, batches: list[Any], h: Harness, interval: float, harness_first: bool
) -> tuple[float, float]:
    """Bare and harnessed loops in alternating blocks; (bare seconds, harness seconds)."""
    bare_model, bare_opt = make_model(0)
    model, opt = make_model(0)
    assert h.sender is not None
    sender = h.sender
    own = {"time": 0.0, "last_save": 0.0}  # the harness loop's own clock, for the interval

    def bare_block(first: int, last: int) -> float:
        start = time.perf_counter()
        for step in range(first, last):
            step_fn(bare_model, bare_opt, *batches[step % len(batches)])
        return time.perf_counter() - start

    def harness_block(first: int, last: int) -> float:
        start = time.perf_counter()
        for step in range(first, last):
            if h.stop.requested:
                h.preempt(
                    step - 1, lambda: {"model": model.state_dict(), "optimizer": opt.state_dict()}
                )
            loss = step_fn(model, opt, *batches[step % len(batches)])
            h.log(step, {"train_loss": loss})
            if own["time"] + time.perf_counter() - start - own["last_save"] >= interval:
                h.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict()})
                own["last_save"] = own["time"] + time.perf_counter() - start
        # Everything this block caused is charged to it: points in MLflow, checkpoint durable.
        h.logger.drain()
        if not sender.flush(timeout=120):
            raise SystemExit(f"MLflow did not take the points: {sender.last_error}")
        h.checkpoints.wait()
        elapsed = time.perf_counter() - start
        own["time"] += elapsed
        return elapsed

    bare_s = harness_s = 0.0
    for i, first in enumerate(range(1, steps + 1, block)):
        last = min(first + block, steps + 1)
        if (i % 2 == 0) == harness_first:
            harness_s += harness_block(first, last)
            bare_s += bare_block(first, last)
        else:
            bare_s += bare_block(first, last)
            harness_s += harness_block(first, last)
    return bare_s, harness_s


def one_repetition(
    args: argparse.Namespace, root: Path, uri: str, tag: str, batches: list[Any], first: bool
) -> tuple[float, float, str]:
    """One fresh trial; returns (bare s, harness s, a problem with the delivered points or "")."""
    h = open_harness(root, uri, tag, args.checkpoint_interval)
    bare, harnessed = interleaved(
        args.steps, args.block, batches, h, args.checkpoint_interval, first
    )
    saves, stall = h.checkpoints.saves, h.checkpoints.last_stall_seconds
    undelivered = h.close(timeout=60)
    assert h.sender is not None and h.sender.run_id is not None
    history = tracking.client(uri).get_metric_history(h.sender.run_id, "train_loss")
    steps = sorted(m.step for m in history)
    problem = ""
    if undelivered or steps != list(range(1, args.steps + 1)):
        problem = (
            f"{tag}: {undelivered} points undelivered, the server holds {len(steps)} points for "
            f"{len(set(steps))} distinct steps of {args.steps}"
        )
    print(
        f"{tag}: bare {1000 * bare / args.steps:.2f} ms/step, harness "
        f"{1000 * harnessed / args.steps:.2f} ms/step ({harnessed / bare:.4f}); {saves} checkpoints"
        f" (last stall {1000 * (stall or 0):.1f} ms); MLflow holds {len(steps)}/{args.steps} points",
        flush=True,
    )
    return bare, harnessed, problem


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 3 repetitions of 160 steps")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--block", type=int, default=100, help="steps per alternating block")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint-interval", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--mlflow-uri", default="", help="default: start a loopback MLflow server")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.block, args.repeats = 160, 40, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    tracking.configure_http()
    batches = make_batches(32, args.batch)
    gate = Gate("bench_harness")
    gate.note(
        f"{args.steps} steps per repetition in blocks of {args.block}, batch {args.batch}, "
        f"{torch.get_num_threads()} torch threads on {os.cpu_count()} CPUs (shared machine), "
        f"checkpoint every {args.checkpoint_interval:g} s of harness time"
    )
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        root = Path(tmp)
        server = None
        uri = args.mlflow_uri
        if not uri:
            from pipelines.backends.mlflow_server import start_mlflow_server

            server = start_mlflow_server(root / "mlflow", timeout=300)
            uri = server.url
        try:
            warm = argparse.Namespace(**{**vars(args), "steps": 2 * args.block})
            one_repetition(warm, root, uri, "warmup", batches, True)
            runs = [
                one_repetition(args, root, uri, f"r{i}", batches, i % 2 == 1)
                for i in range(args.repeats)
            ]
        finally:
            if server is not None:
                server.stop()
    problems = [p for _, _, p in runs if p]
    gate.check(not problems, "every point of every repetition in MLflow exactly once" + (
        ": " + "; ".join(problems) if problems else ""))  # fmt: skip
    cmp = Comparison(
        "harness / bare time", [b for b, _, _ in runs], [h for _, h, _ in runs],
        scale=1000 / args.steps, unit=" ms/step", names=("bare", "harness"),
    )  # fmt: skip
    gate.at_most(cmp, TARGET)
    return gate.finish()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Harness overhead on a GPU: a GPT-2-small-shaped model, bare loop vs the trial harness.

Model: 12 layers, 768 wide, 12 heads, sequence 1024, vocabulary 50257 (plain torch, bf16 autocast,
fused AdamW, random tokens) on CUDA; without a GPU (``--device auto``) a toy config of the same shape
on CPU, so the script itself can be checked anywhere. The harness run logs the loss every step to
TensorBoard and to a real MLflow server on loopback, and checkpoints every ``--checkpoint-interval``
seconds through :class:`components.runtime.harness.Harness`.

Runs: ``--repeats`` pairs of a bare run and a harness run, alternating which goes first. A harness
run ends, inside its timing, once MLflow has every point and the last checkpoint is durable.

Figures:
- overhead: harness time / bare time - 1, gated on the worse of the median pair ratio and the ratio
  of the medians (``benchmarks/_measure.py``). Target <= 1 %.
- stall: the wall time of each step that checkpoints, as the loop sees it (``cuda.synchronize()``,
  encoding the state, the host copy), minus the median step of the same run. The floor is a copy of
  the same state into preallocated pinned host memory alone. Target: worst stall <= 1.5 x floor.
- every point logged in every harness run is delivered.

    python benchmarks/gpu_overhead.py [--seconds 40] [--checkpoint-interval 15] [--device auto]

The MLflow server needs the ``mlflow`` package (not only ``mlflow-skinny``): on a machine whose image
lacks it, pass ``--mlflow-uri`` of a server elsewhere, or ``--no-mlflow`` to measure TensorBoard and
checkpoints alone (reported as such). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._measure import Comparison, Gate, alternate, spread  # noqa: E402
from components.runtime import tracking  # noqa: E402
from components.runtime.ckpt_format import _HostBuffers  # noqa: E402
from components.runtime.ckpt_format import encode as _encode  # noqa: E402
from components.runtime.harness import Harness  # noqa: E402

OVERHEAD_TARGET = 0.01
STALL_TARGET = 1.5


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, seq: int, vocab: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(seq, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build(cfg: dict[str, int], device: torch.device) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(cfg["layers"], cfg["width"], cfg["heads"], cfg["seq"], cfg["vocab"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    return model, opt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(
    model: GPT, opt: torch.optim.Optimizer, batch: torch.Tensor, device: torch.device
) -> torch.Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(batch[:, :-1])
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def bare_loop(
    model: GPT, opt: torch.optim.Optimizer, batches: list[torch.Tensor], steps: int,
    device: torch.device,
) -> float:  # fmt: skip
    sync(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(model, opt, batches[step % len(batches)], device)
    sync(device)
    return time.perf_counter() - start


def harness_loop(
    model: GPT, opt: torch.optim.Optimizer, batches: list[torch.Tensor], steps: int,
    device: torch.device, harness: Harness, step_times: list[float], saved_at: list[int],
) -> float:  # fmt: skip
    """The harnessed loop; per-step wall times and the steps that checkpointed are recorded."""

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}

    sync(device)
    harness.start_clock()
    start = last = time.perf_counter()
    for step in range(1, steps + 1):
        loss = train_step(model, opt, batches[step % len(batches)], device)
        harness.log(step, {"train_loss": loss})
        if harness.checkpoint_due() and harness.save(step, state()):
            saved_at.append(step - 1)
        now = time.perf_counter()
        step_times.append(now - last)
        last = now
    sync(device)
    # What the user waits for: every point in MLflow, the last checkpoint durable.
    harness.logger.drain()
    if harness.sender is not None:
        harness.sender.flush(timeout=120)
    harness.checkpoints.wait()
    return time.perf_counter() - start


def pinned_copy_seconds(
    model: GPT, opt: torch.optim.Optimizer, device: torch.device, repeats: int = 5
) -> tuple[list[float], int]:
    """Times of copying the whole state into preallocated (pinned) host buffers, alone."""
    tensors: list[torch.Tensor] = []
    _encode({"model": model.state_dict(), "optimizer": opt.state_dict()}, tensors, "state")
    buffers = _HostBuffers()
    buffers.copy(tensors)  # allocate
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        buffers.copy(tensors)
        sync(device)
        times.append(time.perf_counter() - start)
    return times, sum(t.numel() * t.element_size() for t in tensors)


def setup(args: argparse.Namespace) -> tuple[dict[str, int], torch.device]:
    tiny = {"layers": 2, "width": 64, "heads": 4, "seq": 64, "vocab": 512}
    gpt2 = {"layers": 12, "width": 768, "heads": 12, "seq": 1024, "vocab": 50257}
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return (gpt2 if device.type == "cuda" and not args.tiny else tiny), device


def mlflow_uri(args: argparse.Namespace, root: Path, stack: contextlib.ExitStack) -> str | None:
    """The tracking server's URL: ``--mlflow-uri``, or a real server started on loopback."""
    if args.no_mlflow:
        return None
    if args.mlflow_uri:
        return str(args.mlflow_uri)
    from pipelines.backends.mlflow_server import start_mlflow_server

    server = start_mlflow_server(root / "mlflow", timeout=300)
    stack.callback(server.stop)
    return server.url


def open_harness(root: Path, uri: str | None, tag: str, interval: float) -> Harness:
    def connect() -> tuple[Any, str]:
        client = tracking.client(uri)
        return client, tracking.ensure_trial_run(
            "bench", tag, experiment="gpu-overhead", mlflow_client=client
        )

    harness = Harness(root / tag, tb_dir=root / "tb" / tag, connect=connect if uri else None,
                      checkpoint_interval=interval, sender_interval=1.0)  # fmt: skip
    deadline = time.monotonic() + 120
    while harness.sender is not None and not harness.sender.connected:
        if time.monotonic() > deadline:
            raise SystemExit(f"no MLflow run after 120 s: {harness.sender.last_error}")
        time.sleep(0.05)
    return harness


def measure(
    args: argparse.Namespace, model: GPT, opt: torch.optim.Optimizer,
    batches: list[torch.Tensor], steps: int, device: torch.device, root: Path, uri: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Alternated bare and harness runs; times, stalls and delivery of each harness run."""
    out: dict[str, Any] = {"stalls": [], "delivery": [], "median_step": []}
    runs = iter(range(10**6))

    def harnessed() -> float:
        n = next(runs)
        harness = open_harness(root, uri, f"run{n}", args.checkpoint_interval)
        harness.checkpoints.reserve({"model": model.state_dict(), "optimizer": opt.state_dict()})
        times: list[float] = []
        saved_at: list[int] = []
        elapsed = harness_loop(model, opt, batches, steps, device, harness, times, saved_at)
        median = statistics.median(times)
        out["median_step"].append(median)
        out["stalls"].extend(times[i] - median for i in saved_at)
        undelivered = harness.close(timeout=120)
        delivered = harness.sender.delivered if harness.sender else None
        out["delivery"].append((delivered, undelivered))
        return elapsed

    out["bare"], out["harness"] = alternate(
        lambda: bare_loop(model, opt, batches, steps, device), harnessed, args.repeats
    )
    return out


def verdicts(
    gate: Gate, out: dict[str, Any], copies: list[float], steps: int, uri: str | None
) -> None:
    gate.at_most(
        Comparison("harness / bare time", out["bare"], out["harness"], names=("bare", "harness")),
        1 + OVERHEAD_TARGET,
    )
    floor = statistics.median(copies)
    gate.note(f"pinned copy of the state alone (floor): {spread(copies, 1000, ' ms')}")
    gate.note(f"median step of the harness runs: {spread(out['median_step'], 1000, ' ms')}")
    stalls = out["stalls"]
    if stalls:
        gate.note(f"checkpoint stalls over the median step: {spread(stalls, 1000, ' ms')}")
    gate.check(
        bool(stalls) and max(stalls) <= STALL_TARGET * floor,
        f"worst checkpoint stall {1000 * max(stalls, default=float('nan')):.2f} ms = "
        f"{max(stalls, default=float('nan')) / floor:.2f} x the pinned copy {1000 * floor:.2f} ms "
        f"({len(stalls)} checkpoints; target <= {STALL_TARGET} x)",
    )
    if uri is not None:
        bad = [d for d in out["delivery"] if d != (steps, 0)]
        gate.check(
            not bad,
            f"every harness run delivered all {steps} points to MLflow (delivered, undelivered "
            f"per run: {out['delivery']})",
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when there is one), cuda, cpu")
    ap.add_argument("--tiny", action="store_true", help="the toy config even on a GPU")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each timed run")
    ap.add_argument("--repeats", type=int, default=3, help="pairs of bare and harness runs")
    ap.add_argument("--checkpoint-interval", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mlflow-uri", default="", help="default: start a server on loopback")
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for gpu_overhead.json")
    ap.add_argument("--no-mlflow", action="store_true", help="TensorBoard and checkpoints only")
    args = ap.parse_args()
    cfg, device = setup(args)
    tracking.configure_http()
    g = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, cfg["vocab"], (args.batch, cfg["seq"] + 1), generator=g).to(device)
        for _ in range(8)
    ]
    model, opt = build(cfg, device)
    bare_loop(model, opt, batches, 5, device)  # warm-up: kernels, allocator, optimizer state
    probe = max(3, math.ceil(2.0 / max(bare_loop(model, opt, batches, 3, device) / 3, 1e-4)) // 4)
    step_s = bare_loop(model, opt, batches, probe, device) / probe
    steps = max(10, int(args.seconds / step_s))
    copies, state_bytes = pinned_copy_seconds(model, opt, device)
    gate = Gate("gpu_overhead")
    gate.note(f"{cfg} batch {args.batch} on {device} ({torch.get_num_threads()} CPU threads): "
              f"~{1000 * step_s:.2f} ms/step, {steps} steps per run, {args.repeats} pairs, "
              f"state {state_bytes / 1e9:.3f} GB, MLflow {'off' if args.no_mlflow else 'on'}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu-overhead-") as tmp, contextlib.ExitStack() as st:
        uri = mlflow_uri(args, Path(tmp), st)
        out = measure(args, model, opt, batches, steps, device, Path(tmp), uri)
    verdicts(gate, out, copies, steps, uri)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "config": cfg, "steps_per_run": steps, "pinned_copy_s": copies, **out,
              "lines": gate.lines, "verdicts": gate.verdicts}  # fmt: skip
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_overhead.json").write_text(json.dumps(report, indent=1))
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())

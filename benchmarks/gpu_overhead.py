"""Harness overhead on a GPU: a GPT-2-small-shaped model, bare loop vs the trial harness.

Model: 12 layers, 768 wide, 12 heads, sequence 1024, vocabulary 50257 (plain torch, bf16 autocast,
fused AdamW, random tokens). The harness run logs the loss every step to TensorBoard and MLflow
(a local file store by default: MLflow need not be a server) and checkpoints every
``--checkpoint-interval`` seconds through :class:`components.runtime.harness.Harness`.

Runs: bare, harness, bare again (the harness is compared with the mean of the two bare runs, which
cancels slow drift of the clocks). Separately it times copying the whole training state to
preallocated pinned host memory, the floor of any checkpoint stall.

Targets (issue 4): overhead <= 1 %; worst checkpoint stall <= 1.5 x the pinned copy. Exit status 1
when missed. ``--tiny`` runs a toy config on CPU to check the script itself.

    python benchmarks/gpu_overhead.py [--seconds 40] [--checkpoint-interval 15] [--tiny]

MLflow is not in the GPU image: carry ``mlflow-skinny`` and the dependencies the image lacks as
wheels in ``.whl/`` and install them with ``pip install --no-deps --target /tmp/site .whl/*.whl``
(PYTHONPATH=/tmp/site) before running; without them the script still measures TensorBoard and
checkpoints, and reports MLflow as unavailable.
"""

from __future__ import annotations

import argparse
import json
import math
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
from torch import nn  # noqa: E402

from components.runtime import tracking  # noqa: E402
from components.runtime.checkpoint import _encode, _HostBuffers  # noqa: E402
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


def loop(
    model: GPT, opt: torch.optim.Optimizer, batches: list[torch.Tensor], steps: int,
    device: torch.device, harness: Harness | None = None,
) -> float:  # fmt: skip
    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}

    sync(device)
    if harness is not None:
        harness.start_clock()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = train_step(model, opt, batches[step % len(batches)], device)
        if harness is not None:
            harness.log(step, {"train_loss": loss})
            if harness.checkpoint_due():
                harness.save(step, state())
    sync(device)
    return time.perf_counter() - start


def pinned_copy_seconds(
    model: GPT, opt: torch.optim.Optimizer, device: torch.device
) -> tuple[float, int]:
    """Best-of-3 time to copy the whole state into preallocated (pinned) host buffers."""
    tensors: list[torch.Tensor] = []
    _encode({"model": model.state_dict(), "optimizer": opt.state_dict()}, tensors, "state")
    buffers = _HostBuffers()
    buffers.copy(tensors)  # allocate
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        buffers.copy(tensors)
        times.append(time.perf_counter() - start)
    return min(times), sum(t.numel() * t.element_size() for t in tensors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="toy config on CPU (checks the script)")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each timed run")
    ap.add_argument("--checkpoint-interval", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mlflow-uri", default="", help="default: a file store in a temporary folder")
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for gpu_overhead.json")
    ap.add_argument("--no-mlflow", action="store_true", help="TensorBoard and checkpoints only")
    args = ap.parse_args()
    mlflow_status = "off (--no-mlflow)" if args.no_mlflow else "on"
    if not args.no_mlflow:
        try:
            import mlflow  # noqa: F401
        except (
            Exception
        ) as exc:  # not in the GPU image: carry the wheels (see the module docstring)
            mlflow_status = f"unavailable: {type(exc).__name__}: {exc}"
            print(f"MLflow {mlflow_status}; measuring without it", file=sys.stderr)
    if args.tiny:
        cfg = {"layers": 2, "width": 64, "heads": 4, "seq": 64, "vocab": 512}
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        cfg = {"layers": 12, "width": 768, "heads": 12, "seq": 1024, "vocab": 50257}
        if not torch.cuda.is_available():
            print("no GPU: run with --tiny to check the script on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
    tracking.configure_http()
    g = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, cfg["vocab"], (args.batch, cfg["seq"] + 1), generator=g).to(device)
        for _ in range(8)
    ]
    model, opt = build(cfg, device)
    loop(model, opt, batches, 5, device)  # warm-up: kernels, allocator, optimizer state
    probe = max(3, math.ceil(2.0 / max(loop(model, opt, batches, 3, device) / 3, 1e-4)) // 4)
    step_s = loop(model, opt, batches, probe, device) / probe
    steps = max(10, int(args.seconds / step_s))
    copy_s, state_bytes = pinned_copy_seconds(model, opt, device)
    print(f"{cfg} batch {args.batch} on {device}: ~{1000 * step_s:.2f} ms/step, {steps} steps per run, "
          f"state {state_bytes / 1e9:.3f} GB, pinned copy {1000 * copy_s:.2f} ms", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="gpu-overhead-") as tmp:
        root = Path(tmp)
        uri = args.mlflow_uri or (root / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it opt-in

        def connect() -> tuple[Any, str]:
            client = tracking.client(uri)
            return client, tracking.ensure_trial_run(
                "bench", "gpt2", experiment="gpu-overhead", mlflow_client=client
            )

        bare1 = loop(model, opt, batches, steps, device)
        use_mlflow = mlflow_status == "on"
        harness = Harness(root / "trial", tb_dir=root / "tb", connect=connect if use_mlflow else None,
                          checkpoint_interval=args.checkpoint_interval, sender_interval=1.0)  # fmt: skip
        deadline = time.monotonic() + 120
        while (
            harness.sender is not None
            and not harness.sender.connected
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        harness.checkpoints.reserve({"model": model.state_dict(), "optimizer": opt.state_dict()})
        stalls: list[float] = []
        original_save = harness.checkpoints.save

        def recording_save(*a: Any, **kw: Any) -> bool:
            saved = original_save(*a, **kw)
            if saved and harness.checkpoints.last_stall_seconds is not None:
                stalls.append(harness.checkpoints.last_stall_seconds)
            return saved

        harness.checkpoints.save = recording_save  # type: ignore[method-assign]
        with_harness = loop(model, opt, batches, steps, device, harness)
        close_start = time.perf_counter()
        undelivered = harness.close(timeout=120)
        close_s = time.perf_counter() - close_start
        write_s = harness.checkpoints.last_write_seconds
        bare2 = loop(model, opt, batches, steps, device)
        delivered = harness.sender.delivered if harness.sender else 0

    bare = (bare1 + bare2) / 2
    overhead = with_harness / bare - 1
    worst_stall = max(stalls) if stalls else float("nan")
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (tiny)",
        "config": cfg,
        "batch": args.batch,
        "steps_per_run": steps,
        "bare_seconds": [bare1, bare2],
        "harness_seconds": with_harness,
        "bare_step_ms": 1000 * bare / steps,
        "harness_step_ms": 1000 * with_harness / steps,
        "overhead_percent": 100 * overhead,
        "overhead_target_percent": 100 * OVERHEAD_TARGET,
        "state_gb": state_bytes / 1e9,
        "pinned_copy_ms": 1000 * copy_s,
        "checkpoint_stalls_ms": [1000 * s for s in stalls],
        "stall_ratio": worst_stall / copy_s,
        "stall_target_ratio": STALL_TARGET,
        "checkpoint_write_seconds": write_s,
        "close_seconds": close_s,
        "points_delivered": delivered,
        "points_undelivered": undelivered,
        "mlflow": mlflow_status,
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_overhead.json").write_text(json.dumps(report, indent=1))
    failed = []
    if not stalls:
        failed.append(
            "no checkpoint was taken: lengthen --seconds or shorten --checkpoint-interval"
        )
    if mlflow_status.startswith("unavailable"):
        failed.append(f"MLflow {mlflow_status}")
    elif mlflow_status == "on" and undelivered or delivered < steps:
        failed.append(
            f"metric points: {delivered} delivered, {undelivered} undelivered, {steps} logged"
        )
    if not args.tiny:  # toy CPU runs check the script, not the targets
        if overhead > OVERHEAD_TARGET:
            failed.append(f"overhead {100 * overhead:.2f} % > {100 * OVERHEAD_TARGET:.0f} %")
        if worst_stall > STALL_TARGET * copy_s:
            failed.append(
                f"stall {1000 * worst_stall:.1f} ms > {STALL_TARGET} x pinned copy {1000 * copy_s:.1f} ms"
            )
    for f in failed:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The trials bench_harness times: a bare training loop and the same loop in a harness (connected to
MLflow, checkpointing on a step schedule), the CPU clocks it reads (per process, per process group,
per thread by name) and the figures of each trial. Not a benchmark: `make bench` runs
benchmarks/bench_*.py only.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from components.runtime import tracking
from components.runtime.harness import Harness


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


# --------------------------------------------------------------------------- CPU clocks


def process_cpu() -> float:
    """CPU seconds (user + system) of this process so far, every thread, ended ones included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ThreadClocks:
    """The CPU seconds of every Python thread of this process, the ones that ended included.

    A live thread's clock is read through ``pthread_getcpuclockid`` (the kernel's per-thread
    ``utime + stime``, what ``/proc/self/task/<tid>/stat`` shows in clock ticks, here in
    nanoseconds); a thread's last reading is taken as its ``run`` returns (``install`` wraps
    :meth:`threading.Thread.run`), so a thread that ends between two readings is still counted.
    """

    def __init__(self) -> None:
        self._ended: dict[threading.Thread, float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        run = threading.Thread.run
        clocks = self

        def timed_run(thread: threading.Thread) -> None:
            try:
                run(thread)
            finally:
                with clocks._lock:
                    clocks._ended[thread] = time.thread_time()

        threading.Thread.run = timed_run  # type: ignore[method-assign,assignment]

    def read(self) -> dict[threading.Thread, float]:
        """CPU seconds so far of every thread but the calling one, keyed by thread."""
        with self._lock:
            now = dict(self._ended)
        me = threading.current_thread()
        for t in threading.enumerate():
            if t is me or t in now or t.ident is None:
                continue
            try:
                now[t] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except OSError:  # it ended just now: its reading is in _ended
                with self._lock:
                    if t in self._ended:
                        now[t] = self._ended[t]
        return now

    @staticmethod
    def by_name(
        before: dict[threading.Thread, float], after: dict[threading.Thread, float]
    ) -> dict[str, float]:
        """CPU seconds between two readings, summed per thread name (a checkpoint writer's
        ``checkpoint-writer`` threads together; a name's trailing ``-<number>`` dropped)."""
        out: dict[str, float] = defaultdict(float)
        for t, cpu in after.items():
            used = cpu - before.get(t, 0.0)
            if used > 0:
                name = t.name.rsplit("-", 1)[0] if t.name.rsplit("-", 1)[-1].isdigit() else t.name
                out[name] += used
        return dict(out)


CLOCKS = ThreadClocks()
POINT_THREADS = ("metrics-pump", "mlflow-sender")
CHECKPOINT_THREADS = ("checkpoint-writer", "sharded-checkpoint")


@dataclass
class Trial:
    """One harnessed trial's figures (seconds)."""

    wall: float
    process: float  # this process's CPU, every thread
    steps: int
    points: int
    mb: float  # checkpoint MB written
    saves: int
    main: dict[str, float]  # the training thread's CPU inside the harness's calls
    threads: dict[str, float]  # CPU of the other threads, per name
    server: float | None  # the MLflow server's CPU
    problem: str = ""

    @property
    def point_cpu(self) -> float:
        return self.main["log"] + sum(self.threads.get(n, 0.0) for n in POINT_THREADS)

    @property
    def checkpoint_cpu(self) -> float:
        return self.main["save"] + sum(self.threads.get(n, 0.0) for n in CHECKPOINT_THREADS)

    @property
    def total_cpu(self) -> float:
        return sum(self.main.values()) + sum(self.threads.values())

    @property
    def step_cpu(self) -> float:
        """Everything but the checkpoints."""
        return self.total_cpu - self.checkpoint_cpu


@dataclass
class Bare:
    wall: float
    process: float


@dataclass
class Rounds:
    harnessed: list[Trial] = field(default_factory=list)
    bare: list[Bare] = field(default_factory=list)


def open_harness(root: Path, uri: str, tag: str) -> Harness:
    """A trial's harness, connected to MLflow before any timing (as a trial is while loading data)."""

    def connect() -> tuple[Any, str]:
        client = tracking.client(uri)
        run = tracking.ensure_trial_run(
            "bench", tag, experiment="bench-harness", mlflow_client=client
        )
        return client, run

    # checkpoints on a fixed step schedule (below), not on the clock: the same work every round
    h = Harness(root / tag, tb_dir=root / "tb" / tag, connect=connect, checkpoint_interval=1e9)
    assert h.sender is not None
    deadline = time.monotonic() + 120
    while not h.sender.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    if not h.sender.connected:
        raise SystemExit(f"no MLflow run after 120 s: {h.sender.last_error}")
    return h


def bare_trial(steps: int, batches: list[Any]) -> Bare:
    """The training loop alone: ``steps`` steps of a fresh model."""
    model, opt = make_model(0)
    cpu = process_cpu()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        step_fn(model, opt, *batches[step % len(batches)])
    return Bare(time.perf_counter() - start, process_cpu() - cpu)


def harnessed_trial(
    steps: int,
    checkpoints: int,
    root: Path,
    uri: str,
    tag: str,
    batches: list[Any],
    server_cpu: Callable[[], float] | None = None,
) -> Trial:
    """The same loop as a trial runs it, until the trial is over (after :meth:`Harness.close`)."""
    h = open_harness(root, uri, tag)
    model, opt = make_model(0)
    every = -(-steps // checkpoints)  # the last one at the last step

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}

    threads_before = CLOCKS.read()
    server_before = server_cpu() if server_cpu else None
    cpu = process_cpu()
    start = time.perf_counter()
    main, mb, undelivered = train_in_harness(h, model, opt, state, steps, every, batches)
    wall = time.perf_counter() - start
    process = process_cpu() - cpu
    threads = ThreadClocks.by_name(threads_before, CLOCKS.read())
    server = server_cpu() - server_before if server_cpu and server_before is not None else None
    logged = logged_steps(h, uri)
    saves = h.checkpoints.saves
    problem = trial_problem(tag, steps, checkpoints, undelivered, logged, saves)
    trial = Trial(wall, process, steps, steps, mb, saves, main, threads, server, problem)
    print_trial(tag, trial, logged)
    return trial


def train_in_harness(
    h: Harness,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: Callable[[], dict[str, Any]],
    steps: int,
    every: int,
    batches: list[Any],
) -> tuple[dict[str, float], float, int]:
    """The timed part: ``steps`` steps logging a point each and checkpointing every ``every``, then
    the harness's close; the training thread's CPU in each kind of harness call, the checkpoint MB
    written and the points left undelivered."""
    clock = time.thread_time
    main = {"log": 0.0, "step boundary": 0.0, "save": 0.0, "close": 0.0}
    mb = 0.0
    h.start_clock()
    t0 = clock()
    if h.stop.requested:
        h.preempt(0, state)
    main["step boundary"] += clock() - t0
    for step in range(1, steps + 1):
        loss = step_fn(model, opt, *batches[step % len(batches)])
        t0 = clock()
        h.log(step, {"train_loss": loss})
        t1 = clock()
        saving = 0.0
        if h.checkpoint_due() or step % every == 0 or step == steps:
            t2 = clock()
            h.save(step, state())
            saving = clock() - t2
            mb += h.checkpoints.last_bytes / 1e6
        if h.stop.requested:
            h.preempt(step, state)
        t3 = clock()
        main["log"] += t1 - t0
        main["save"] += saving
        main["step boundary"] += t3 - t1 - saving
    t0 = clock()
    undelivered = h.close(timeout=120)
    main["close"] = clock() - t0
    return main, mb, undelivered


def logged_steps(h: Harness, uri: str) -> list[int]:
    """The steps of the trial's points that the MLflow server holds, sorted."""
    assert h.sender is not None and h.sender.run_id is not None
    history = tracking.client(uri).get_metric_history(h.sender.run_id, "train_loss")
    return sorted(m.step for m in history)


def trial_problem(
    tag: str, steps: int, checkpoints: int, undelivered: int, logged: list[int], saves: int
) -> str:
    """What went wrong with a trial's points or checkpoints; empty when nothing did."""
    problem = ""
    if undelivered or logged != list(range(1, steps + 1)):
        problem = (
            f"{tag}: {undelivered} points undelivered, the server holds {len(logged)} points for "
            f"{len(set(logged))} distinct steps of {steps}"
        )
    elif saves != checkpoints and tag != "warmup":
        problem = f"{tag}: {saves} checkpoint(s), not {checkpoints}"
    return problem


def print_trial(tag: str, trial: Trial, logged: list[int]) -> None:
    steps, mb, saves = trial.steps, trial.mb, trial.saves
    print(
        f"{tag}: {1000 * trial.wall / steps:.2f} ms/step; harness CPU "
        f"{1e6 * trial.step_cpu / steps:.1f} us/step + {saves} checkpoints of "
        f"{mb / max(saves, 1):.1f} MB {1000 * trial.checkpoint_cpu / max(mb, 1e-9):.2f} ms/MB; "
        f"MLflow holds {len(logged)}/{steps} points; threads "
        + ", ".join(f"{n} {1000 * s:.0f} ms" for n, s in sorted(trial.threads.items())),
        flush=True,
    )

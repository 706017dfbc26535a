"""Fetch benchmark: ``--objects`` objects of 64 KiB on the real fake-gcs-server, two conditions.

Every request goes through a counting loopback proxy (a process of its own) in front of
fake-gcs-server; the two conditions differ only in what the proxy adds to each request:
``loopback`` (nothing) and ``+20 ms RTT`` (``--rtt-ms``: GCS's time to first byte for small
objects). Under each condition, in repetitions that alternate which one runs first:

1. speed-up: ``components.fetch`` (parallel, threads of plain GETs, into a fresh shared root)
   against a sequential per-object loop (``blob.download_to_filename`` one by one).
   Target: >= 4x.
2. reuse: a repeat fetch of the version the parallel fetch just completed, against that first fetch.
   Targets: at most one request and at most one listing at the proxy; its time < 1 % of the first
   on loopback and < 3 % with the round trip (one listing round trip is all physics leaves).

Ratios are gated on the unfavourable one of two medians (``benchmarks/_measure.py``). Exit status 1
when any target is missed.

    .venv/bin/python benchmarks/bench_fetch.py [--quick] [--objects 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._measure import Comparison, Gate, alternate  # noqa: E402
from components.fetch import fetch  # noqa: E402
from tests.support.fetch import FakeGcs, GcsProxy, write_data_dir  # noqa: E402

BUCKET = "bench"
PREFIX = "shards"
SPEEDUP_TARGET = 4.0
REUSE_TARGETS = {"loopback": 0.01, "rtt": 0.03}  # repeat fetch / first fetch
REUSE_MAX_REQUESTS = 1
REUSE_MAX_LISTINGS = 1


def _serve_proxy(upstream: str, rtt: float, conn: multiprocessing.connection.Connection) -> None:
    proxy = GcsProxy(upstream)
    proxy.latency = rtt
    proxy.start()
    conn.send(proxy.url)
    while conn.recv() == "counts":
        conn.send((proxy.requests, proxy.listings))
        proxy.reset()
    proxy.stop()


class Proxy:
    """A :class:`GcsProxy` in a process of its own (so its threads do not share our GIL)."""

    def __init__(self, upstream: str, rtt: float) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.Process(
            target=_serve_proxy, args=(upstream, rtt, child), daemon=True
        )
        self._proc.start()
        self.url: str = self._conn.recv()

    def counts(self) -> tuple[int, int]:
        """(requests, listings) answered since the last call."""
        self._conn.send("counts")
        return self._conn.recv()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._conn.send("stop")
        self._proc.join(10)


def sequential(endpoint: str, dest: Path) -> float:
    """The baseline: list, then ``download_to_filename`` one object after another."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    dest.mkdir(parents=True)
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    started = time.perf_counter()
    bucket = client.bucket(BUCKET)
    for blob in client.list_blobs(BUCKET, prefix=PREFIX + "/"):
        target = dest / blob.name[len(PREFIX) + 1 :]
        bucket.blob(blob.name).download_to_filename(str(target))
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest)
    return elapsed


def condition(proxy: Proxy, work: Path, label: str, repeats: int, gate: Gate) -> None:
    """Both targets under one condition; the spreads and verdicts go to ``gate``."""
    source = f"gs://{BUCKET}/{PREFIX}"
    firsts: list[float] = []
    reuses: list[float] = []
    reuse_counts: list[tuple[int, int]] = []
    n = iter(range(10**6))

    def env(root: Path) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": proxy.url, "GOOGLE_CLOUD_PROJECT": "bench",
                "SWEEPYARD_SHARED": str(root)}  # fmt: skip

    def parallel_then_reuse() -> float:
        root = work / f"{label}-shared-{next(n)}"
        started = time.perf_counter()
        first = fetch(source, "bench", env=env(root))
        elapsed = time.perf_counter() - started
        assert first.downloaded, "the first fetch of a fresh shared root downloaded nothing"
        proxy.counts()
        started = time.perf_counter()
        again = fetch(source, "bench", env=env(root))
        reuses.append(time.perf_counter() - started)
        reuse_counts.append(proxy.counts())
        assert not again.downloaded and again.path == first.path
        firsts.append(elapsed)
        shutil.rmtree(root)
        return elapsed

    seq, par = alternate(
        lambda: sequential(proxy.url, work / f"{label}-seq-{next(n)}"), parallel_then_reuse, repeats
    )
    gate.at_least(
        Comparison(f"[{label}] parallel vs sequential", seq, par, names=("sequential", "parallel")),
        SPEEDUP_TARGET,
    )
    key = "loopback" if label == "loopback" else "rtt"
    gate.at_most(
        Comparison(f"[{label}] repeat / first fetch", firsts, reuses, scale=1000, unit=" ms",
                   names=("first", "repeat")),
        REUSE_TARGETS[key], what="cost",
    )  # fmt: skip
    most_requests = max(r for r, _ in reuse_counts)
    most_listings = max(li for _, li in reuse_counts)
    gate.check(
        most_requests <= REUSE_MAX_REQUESTS and most_listings <= REUSE_MAX_LISTINGS,
        f"[{label}] a repeat fetch made at most {most_requests} request(s) and "
        f"{most_listings} listing(s) (targets <= {REUSE_MAX_REQUESTS} and <= {REUSE_MAX_LISTINGS}; "
        f"each of {len(reuse_counts)}: {reuse_counts})",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI size: 3 repetitions (the full 500 objects: the reuse targets are relative to them)",
    )
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    gate = Gate("bench_fetch")
    gate.note(
        f"{args.objects} objects x {args.size // 1024} KiB on fake-gcs-server (memory backend) "
        f"behind a counting proxy, {os.cpu_count()} CPUs (shared machine), {args.repeats} "
        f"alternated repetitions per condition"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        objs = {f"{PREFIX}/part-{i:05d}.bin": os.urandom(args.size) for i in range(args.objects)}
        server = FakeGcs(data=write_data_dir(work / "seed", BUCKET, objs)).start()
        proxies = {"loopback": Proxy(server.url, 0.0),
                   f"+{args.rtt_ms:g} ms RTT": Proxy(server.url, args.rtt_ms / 1000)}  # fmt: skip
        try:
            for label, proxy in proxies.items():
                condition(proxy, work, label, args.repeats, gate)
                print(f"{label}: measured", flush=True)
        finally:
            for proxy in proxies.values():
                proxy.stop()
            server.stop()
    return gate.finish()


if __name__ == "__main__":
    sys.exit(main())

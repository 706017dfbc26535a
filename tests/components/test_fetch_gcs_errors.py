"""gs:// fetches that go wrong, against the real fake-gcs-server through a counting loopback proxy:
malformed sources, missing buckets and prefixes, refusals, a full disk, an unreachable server;
server errors retried until every file verifies or the retry timeout, bodies cut short, reads
refused or gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from components.data.storage import FetchError, TransientFetchError
from components.fetch import fetch
from tests.support.fetch import FakeGcs, GcsProxy, fetch_env, free_port
from tests.support.fetch_gcs import assert_matches, bucket_name, objects, run_cli


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://", "malformed source 'gs://': no bucket"),
        ("gs:///prefix", "no bucket"),
        ("gs://Bad_Bucket/x", "'Bad_Bucket' is not a valid bucket name"),
        ("gs://ab/x", "'ab' is not a valid bucket name"),
        ("gs://bucket/a//b", "empty path segment"),
        ("gs:/bucket/x", "malformed source 'gs:/bucket/x'"),
        ("s3://bucket/x", "s3:// is not supported"),
    ],
)
def test_malformed_uri(uri: str, message: str, tmp_path: Path):
    with pytest.raises(FetchError, match=message.replace("(", r"\(").replace("/", "/")):
        fetch(uri, "ds", env={"SWEEPYARD_SHARED": str(tmp_path)})


def test_missing_bucket(env):
    with pytest.raises(
        FetchError, match=r"gs://no-such-bucket-x/p: bucket 'no-such-bucket-x' does not exist"
    ):
        fetch("gs://no-such-bucket-x/p", "ds", env=env)


def test_missing_prefix_and_empty_bucket(gcs: FakeGcs, env):
    b = bucket_name()
    gcs.seed(b, {"present/a.bin": b"a"})
    with pytest.raises(FetchError, match=rf"gs://{b}/absent: no objects under prefix 'absent'"):
        fetch(f"gs://{b}/absent", "ds", env=env)
    with pytest.raises(FetchError, match=rf"gs://{b}/presen: no objects under prefix 'presen'"):
        fetch(f"gs://{b}/presen", "ds", env=env)  # a string prefix is not a folder
    empty = bucket_name()
    gcs.client().create_bucket(empty)
    with pytest.raises(FetchError, match=rf"gs://{empty}: no objects in the bucket \(empty"):
        fetch(f"gs://{empty}", "ds", env=env)


def test_permission_refused(gcs: FakeGcs, proxy: GcsProxy, env):
    b = bucket_name()
    gcs.seed(b, {"x/a.bin": b"a"})
    proxy.refuse_buckets = {b}
    with pytest.raises(
        FetchError, match=rf"gs://{b}/x: permission refused \(403\) listing objects"
    ):
        fetch(f"gs://{b}/x", "ds", env=env)
    proc = run_cli(env, f"gs://{b}/x", "--dataset", "ds")
    assert proc.returncode == 3
    assert "permission refused (403)" in proc.stderr and proc.stdout == ""


def test_disk_without_room(gcs: FakeGcs, proxy: GcsProxy, env, tmp_path: Path, monkeypatch):
    b = bucket_name()
    gcs.seed(b, objects(3, 1_000_000))
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]
    mounted = os.geteuid() == 0 and subprocess.run(mount).returncode == 0
    if not mounted:  # not root: the one case where pretending the disk is small is allowed
        usage = shutil.disk_usage(small)._replace(free=1 << 20)
        monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage)
    try:
        with pytest.raises(
            FetchError,
            match=rf"gs://{b}/train: not enough room on .*small/data/ds: the download needs 2\.9 MiB",
        ):
            fetch(f"gs://{b}/train", "ds", env={**env, "SWEEPYARD_SHARED": str(small)})
        assert proxy.total_reads == 0
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)


def test_unreachable_server_is_transient_exit_1(tmp_path: Path):
    env = fetch_env(
        f"http://127.0.0.1:{free_port()}", tmp_path / "shared", SWEEPYARD_FETCH_RETRY_TIMEOUT="1"
    )
    with pytest.raises(TransientFetchError, match=r"gs://b-x/p: listing objects failed"):
        fetch("gs://b-x/p", "ds", env=env)
    proc = run_cli(env, "gs://b-x/p", "--dataset", "ds")
    assert proc.returncode == 1, proc.stderr
    assert "transient error" in proc.stderr


def test_server_errors_for_a_while_are_retried_until_every_file_verifies(
    gcs: FakeGcs, proxy: GcsProxy, env
):
    b = bucket_name()
    objs = objects(8, 20_000)
    gcs.seed(b, objs)
    proxy.fail_reads = {
        "train/part-0001.bin": [503, 503],
        "train/part-0002.bin": [429, 429, 429],
        "train/part-0003.bin": [500, 502, 504, 408],
    }
    result = fetch(f"gs://{b}/train", "flaky", env=env)
    assert_matches(result.path, objs)
    assert proxy.failed_reads == {
        "train/part-0001.bin": 2,
        "train/part-0002.bin": 3,
        "train/part-0003.bin": 4,
    }
    assert proxy.reads == {name: 1 for name in objs}


def test_a_retry_after_is_waited_for_and_one_past_the_retry_timeout_gives_up_at_once(
    gcs: FakeGcs, proxy: GcsProxy, env
):
    b = bucket_name()
    objs = objects(4, 1_000)
    gcs.seed(b, objs)
    proxy.fail_reads = {"train/part-0001.bin": [503]}
    proxy.retry_after = "1"  # without it the first pause is drawn below 0.5 s
    started = time.monotonic()
    result = fetch(f"gs://{b}/train", "asked", env=env)
    assert time.monotonic() - started >= 1.0
    assert_matches(result.path, objs)
    assert proxy.failed_reads == {"train/part-0001.bin": 1}

    proxy.fail_reads = {"train/part-0002.bin": [429] * 3}
    proxy.retry_after = "3600"
    started = time.monotonic()
    with pytest.raises(
        TransientFetchError,
        match=r"'train/part-0002\.bin': HTTP 429 Too Many Requests \(the server asked to wait "
        r"3600 s\)",
    ):
        fetch(f"gs://{b}/train", "asked-too-long", env=env)
    assert time.monotonic() - started < 10  # the retry timeout is 5 s: it does not sleep an hour
    assert proxy.failed_reads["train/part-0002.bin"] == 3  # once per attempt


def test_errors_outlasting_the_retry_timeout_fail_and_a_rerun_reads_only_the_missing(
    gcs: FakeGcs, proxy: GcsProxy, env, tmp_path
):
    b = bucket_name()
    objs = objects(10, 20_000)
    gcs.seed(b, objs)
    proxy.fail_reads = {"train/part-0004.bin": [503] * 1000}
    env = {**env, "SWEEPYARD_FETCH_RETRY_TIMEOUT": "0.5"}
    started = time.monotonic()
    with pytest.raises(
        TransientFetchError,
        match=rf"gs://{b}/train: 1 object\(s\) still failing after 3 attempts, "
        r"e\.g\. 'train/part-0004\.bin': HTTP 503 Service Unavailable",
    ):
        fetch(f"gs://{b}/train", "outage", env=env)
    assert time.monotonic() - started < 10
    assert proxy.failed_reads["train/part-0004.bin"] >= 3  # tried again within each attempt
    (tmp,) = (tmp_path / "shared" / "data" / "outage").glob(".tmp-*")
    assert not (tmp / "part-0004.bin").exists()

    proxy.fail_reads.clear()  # the server heals
    proxy.reset()
    result = fetch(f"gs://{b}/train", "outage", env=env)
    assert_matches(result.path, objs)
    assert proxy.reads == {"train/part-0004.bin": 1}


def test_a_body_cut_short_is_never_taken_for_a_whole_file(
    gcs: FakeGcs, proxy: GcsProxy, env, tmp_path
):
    b = bucket_name()
    objs = objects(6, 200_000)
    gcs.seed(b, objs)
    proxy.cut_reads["train/part-0002.bin"] = 1
    result = fetch(f"gs://{b}/train", "cut", env=env)
    assert_matches(result.path, objs)
    assert proxy.reads["train/part-0002.bin"] == 2

    # Cut on every read: the fetch fails, and the half-written file is not left behind.
    proxy.cut_reads["train/part-0003.bin"] = 1000
    with pytest.raises(TransientFetchError, match=r"'train/part-0003\.bin': ProtocolError"):
        fetch(f"gs://{b}/train", "cut-again", env={**env, "SWEEPYARD_FETCH_RETRY_TIMEOUT": "0.3"})
    (tmp,) = (tmp_path / "shared" / "data" / "cut-again").glob(".tmp-*")
    assert sorted(p.name for p in tmp.iterdir()) == [
        f"part-{i:04d}.bin" for i in range(6) if i != 3
    ]


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, TransientFetchError, r"'train/part-0001\.bin' generation \d+ vanished during the"),
        (403, FetchError, r"permission refused \(403\) reading 'train/part-0001\.bin'"),
        (401, FetchError, r"permission refused \(401\) reading 'train/part-0001\.bin'"),
    ],
)
def test_a_read_refused_or_gone_stops_the_fetch(
    gcs: FakeGcs, proxy: GcsProxy, env, status: int, error: type[Exception], message: str
):
    b = bucket_name()
    gcs.seed(b, objects(3, 1_000))
    proxy.fail_reads = {"train/part-0001.bin": [status]}
    with pytest.raises(error, match=rf"^gs://{b}/train: .*{message}"):
        fetch(f"gs://{b}/train", "gone", env=env)
    assert proxy.failed_reads == {"train/part-0001.bin": 1}  # never retried

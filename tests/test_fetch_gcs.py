"""gs:// fetches against the real fake-gcs-server binary, through a counting loopback proxy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from components.fetch import fetch
from components.runtime.storage import COMPLETE, MANIFEST, FetchError, TransientFetchError
from tests.support.fetch import FakeGcs, GcsProxy, fetch_env, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gcs() -> Iterator[FakeGcs]:
    server = FakeGcs().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(gcs: FakeGcs) -> Iterator[GcsProxy]:
    p = GcsProxy(gcs.url).start()
    yield p
    p.stop()


@pytest.fixture
def env(proxy: GcsProxy, tmp_path: Path) -> dict[str, str]:
    return fetch_env(proxy.url, tmp_path / "shared")


def bucket_name() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def objects(n: int, size: int, prefix: str = "train") -> dict[str, bytes]:
    return {f"{prefix}/part-{i:04d}.bin": os.urandom(size) for i in range(n)}


def assert_matches(path: Path, objs: dict[str, bytes], prefix: str = "train") -> None:
    for name, content in objs.items():
        assert (path / name[len(prefix) + 1 :]).read_bytes() == content, name


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.fetch", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fetch_materialises_verifies_and_reuses(gcs: FakeGcs, proxy: GcsProxy, env, tmp_path):
    b = bucket_name()
    objs = objects(12, 20_000)
    objs["train/sub/dir/nested.txt"] = b"nested"
    gcs.seed(b, objs)
    gcs.seed(b, {"other/elsewhere.bin": b"not under the prefix", "trainer.txt": b"nor this"})

    first = fetch(f"gs://{b}/train", "ds", env=env)

    assert first.downloaded
    assert first.path == tmp_path / "shared" / "data" / "ds" / first.hash
    assert_matches(first.path, objs)
    assert (first.path / COMPLETE).exists()
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["count"] == 13 and manifest["source"] == f"gs://{b}/train"
    assert {f["name"] for f in manifest["files"]} == {n[len("train/") :] for n in objs}
    assert all(f["generation"] and f["crc32c"] for f in manifest["files"])
    assert sorted(p.name for p in first.path.iterdir()) == sorted(
        [".complete", "MANIFEST.json", "sub", *(f"part-{i:04d}.bin" for i in range(12))]
    )
    assert proxy.reads == {name: 1 for name in objs}
    assert not list((tmp_path / "shared" / "data" / "ds").glob(".tmp-*"))

    proxy.reset()
    second = fetch(f"gs://{b}/train/", "ds", env=env)
    assert (second.path, second.hash, second.downloaded) == (first.path, first.hash, False)
    assert proxy.total_reads == 0 and proxy.bytes_served == 0
    assert proxy.listings == 1


def test_cli_prints_one_json_line_and_writes_outputs(gcs: FakeGcs, env, tmp_path):
    b = bucket_name()
    gcs.seed(b, {"d/a.csv": b"x,y\n1,2\n"})
    proc = run_cli(env, f"gs://{b}/d", "--dataset", "tiny")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"path", "hash"}
    outputs = tmp_path / "outputs"
    assert (outputs / "path").read_text() == out["path"]
    assert (outputs / "hash").read_text() == out["hash"]
    assert (Path(out["path"]) / "a.csv").read_bytes() == b"x,y\n1,2\n"
    assert "1/1 objects" in proc.stderr  # plain log lines when stderr is not a terminal


def test_eight_concurrent_fetchers_download_once(gcs: FakeGcs, proxy: GcsProxy, env):
    b = bucket_name()
    objs = objects(40, 8_000)
    gcs.seed(b, objs)
    proxy.read_delay = 0.05
    proxy.listing_barrier = threading.Barrier(8)  # all 8 reach the lock at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "components.fetch", f"gs://{b}/train", "--dataset", "shared"],
            env={
                **env,
                "SWEEPYARD_OUTPUTS": f"{env['SWEEPYARD_OUTPUTS']}-{i}",
                "SWEEPYARD_FETCH_WORKERS": "4",  # a download of >= 0.5 s: the others must wait
            },
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    paths = {json.loads(out)["path"] for out, _ in results}
    assert len(paths) == 1
    assert proxy.reads == {name: 1 for name in objs}  # one download of each object, in all
    assert proxy.bytes_served == sum(len(c) for c in objs.values())
    assert proxy.listings == 8
    assert_matches(Path(paths.pop()), objs)
    waited = sum("waiting for it" in err for _, err in results)
    reused = sum("already complete, reused" in err for _, err in results)
    assert reused == 7 and waited == 7


def test_killed_fetch_leaves_no_complete_and_resume_reads_only_missing(
    gcs: FakeGcs, proxy: GcsProxy, env, tmp_path
):
    b = bucket_name()
    objs = objects(60, 30_000)
    gcs.seed(b, objs)
    proxy.read_delay = 0.05
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.fetch", f"gs://{b}/train", "--dataset", "killed"],
        env={**env, "SWEEPYARD_FETCH_WORKERS": "4"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while proxy.total_reads < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proxy.wait_idle()  # answers to the killed fetcher still in flight are not the next fetch's
    assert proxy.total_reads < len(objs), "the fetch finished before it could be killed"

    base = tmp_path / "shared" / "data" / "killed"
    assert not list(base.rglob(COMPLETE))
    (tmp,) = base.glob(".tmp-*")
    on_disk = {
        "train/" + p.relative_to(tmp).as_posix()
        for p in tmp.rglob("*")
        if p.is_file() and p.read_bytes() == objs.get("train/" + p.relative_to(tmp).as_posix())
    }
    assert on_disk, "nothing was downloaded before the kill"

    proxy.reset()
    proxy.read_delay = 0
    result = fetch(f"gs://{b}/train", "killed", env=env)
    assert result.downloaded
    assert set(proxy.reads) == set(objs) - on_disk
    assert proxy.total_reads == len(objs) - len(on_disk)
    assert_matches(result.path, objs)
    assert (result.path / COMPLETE).exists() and not tmp.exists()


def test_corruption_in_transit_is_detected_and_fetched_again(gcs: FakeGcs, proxy: GcsProxy, env):
    b = bucket_name()
    objs = objects(6, 10_000)
    gcs.seed(b, objs)
    proxy.flip_once = {"train/part-0003.bin"}
    result = fetch(f"gs://{b}/train", "flip", env=env)
    assert_matches(result.path, objs)
    assert proxy.reads["train/part-0003.bin"] == 2
    assert proxy.total_reads == 7


def test_corruption_on_disk_is_detected_on_resume(gcs: FakeGcs, proxy: GcsProxy, env, tmp_path):
    b = bucket_name()
    objs = objects(6, 10_000)
    gcs.seed(b, objs)
    done = fetch(f"gs://{b}/train", "disk", env=env)
    # Turn the finished version back into an interrupted one with one corrupt file.
    tmp = done.path.parent / f".tmp-{done.hash}"
    shutil.copytree(done.path, tmp)
    shutil.rmtree(done.path)
    (tmp / COMPLETE).unlink()
    victim = tmp / "part-0002.bin"
    data = bytearray(victim.read_bytes())
    data[5000] ^= 0x01
    victim.write_bytes(bytes(data))

    proxy.reset()
    again = fetch(f"gs://{b}/train", "disk", env=env)
    assert again.path == done.path and again.downloaded
    assert proxy.reads == {"train/part-0002.bin": 1}
    assert_matches(again.path, objs)


def test_new_generation_gives_a_new_version(gcs: FakeGcs, proxy: GcsProxy, env):
    b = bucket_name()
    objs = objects(4, 5_000)
    gcs.seed(b, objs)
    old = fetch(f"gs://{b}/train", "gen", env=env)
    gcs.seed(b, {"train/part-0001.bin": b"changed content"})
    proxy.reset()
    new = fetch(f"gs://{b}/train", "gen", env=env)
    assert new.hash != old.hash and new.path != old.path and new.downloaded
    assert (new.path / "part-0001.bin").read_bytes() == b"changed content"
    assert (old.path / "part-0001.bin").read_bytes() == objs["train/part-0001.bin"]
    assert (old.path / COMPLETE).exists()
    # Same bytes re-uploaded are a new generation too: the listing says what the version is.
    gcs.seed(b, {"train/part-0001.bin": b"changed content"})
    assert fetch(f"gs://{b}/train", "gen", env=env).hash not in (old.hash, new.hash)


def test_listing_of_1000_objects(tmp_path: Path):
    from tests.support.fetch import write_data_dir

    objs = {f"many/o-{i:04d}.txt": f"object {i}\n".encode() for i in range(1000)}
    server = FakeGcs(data=write_data_dir(tmp_path / "seed", "big", objs)).start()
    try:
        result = fetch("gs://big/many", "many", env=fetch_env(server.url, tmp_path / "shared"))
    finally:
        server.stop()
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["count"] == 1000
    assert len([p for p in result.path.iterdir() if p.name.startswith("o-")]) == 1000
    assert (result.path / "o-0999.txt").read_text() == "object 999\n"


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


def test_progress_bar_on_a_terminal(gcs: FakeGcs, env):
    import pty

    b = bucket_name()
    gcs.seed(b, objects(5, 50_000))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.fetch", f"gs://{b}/train", "--dataset", "tty"],
        env={**env, "TERM": "xterm", "COLUMNS": "160"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "5/5 objects" in screen and "/s" in screen and "244.1" in screen  # KiB of 250,000 B
    assert json.loads(out)["hash"]


def test_gzip_encoded_objects_are_kept_as_stored(gcs: FakeGcs, env):
    import gzip

    b = bucket_name()
    gcs.seed(b, {"z/plain.txt": b"plain"})
    stored = gzip.compress(b"a,b\n" * 1000)
    blob = gcs.client().bucket(b).blob("z/table.csv.gz")
    blob.content_encoding = "gzip"
    blob.upload_from_string(stored, content_type="text/csv")
    result = fetch(f"gs://{b}/z", "gz", env=env)
    assert (result.path / "table.csv.gz").read_bytes() == stored  # the bytes the CRC32C is of
    assert (result.path / "plain.txt").read_bytes() == b"plain"


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


def test_downloads_go_through_the_proxy_of_the_environment_unless_no_proxy(
    gcs: FakeGcs, proxy: GcsProxy, env, monkeypatch
):
    b = bucket_name()
    objs = objects(5, 1_000)
    gcs.seed(b, objs)
    direct = {**env, "STORAGE_EMULATOR_HOST": gcs.url}
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    fetch(f"gs://{b}/train", "via-proxy", env=direct)
    assert proxy.reads == {name: 1 for name in objs} and proxy.listings == 1

    proxy.reset()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fetch(f"gs://{b}/train", "no-proxy", env=direct)
    assert proxy.requests == 0


class _Tokens:
    """Credentials whose every refresh makes a new token, valid ``lifetime`` past the refresh
    threshold; ``refreshes`` counts them."""

    def __init__(self, lifetime: float) -> None:
        from google.auth import _helpers
        from google.auth.credentials import Credentials

        tokens = self

        class Minted(Credentials):
            def refresh(self, request: object) -> None:
                tokens.refreshes += 1
                self.token = f"token-{tokens.refreshes}"
                self.expiry = (
                    _helpers.utcnow() + _helpers.REFRESH_THRESHOLD + timedelta(seconds=lifetime)
                )

        self.refreshes = 0
        self.credentials = Minted()

    def listed(
        self, gcs: FakeGcs, proxy: GcsProxy, objs: dict[str, bytes], workers: int, dest: Path
    ) -> tuple[Any, list[Any]]:
        """``objs`` seeded in a new bucket; a ``GcsSource`` of it reading through ``proxy`` with
        these tokens, its listing, and an empty ``dest``."""
        from components.sources.gcs import GcsSource

        bucket = bucket_name()
        gcs.seed(bucket, objs)
        env = {
            "SWEEPYARD_FETCH_WORKERS": str(workers),
            "STORAGE_EMULATOR_HOST": proxy.url,  # the endpoint; the credentials are these
            "GOOGLE_CLOUD_PROJECT": "test",
        }
        source = GcsSource(f"gs://{bucket}/train", env, credentials=self.credentials)
        dest.mkdir()
        return source, source.list_version().entries


class _Count:
    objects = 0

    def advance(self, nbytes: int, objects: int = 1) -> None:
        self.objects += objects


def test_a_token_rejected_before_its_expiry_is_refreshed_once_and_the_read_retried(
    gcs: FakeGcs, proxy: GcsProxy, tmp_path
):
    objs, tokens, dest = objects(12, 1_000), _Tokens(lifetime=3600), tmp_path / "dest"
    source, entries = tokens.listed(gcs, proxy, objs, workers=4, dest=dest)
    # Every thread's read of one of these is rejected at once: one refresh serves them all.
    proxy.fail_reads = {f"train/part-{i:04d}.bin": [401] for i in range(4)}
    source.download(entries, dest, _Count())
    assert_matches(dest, objs)
    assert proxy.failed_reads == {f"train/part-{i:04d}.bin": 1 for i in range(4)}
    assert proxy.reads == {name: 1 for name in objs}  # each rejected read retried once, and passed
    assert 2 <= tokens.refreshes <= 1 + 4  # the first token, then at most one per rejection

    # Rejected again with the new token: refused, not refreshed forever.
    proxy.fail_reads = {"train/part-0005.bin": [401, 401]}
    shutil.rmtree(dest)
    dest.mkdir()
    with pytest.raises(FetchError, match=r"permission refused \(401\) reading 'train/part-0005"):
        source.download(entries, dest, _Count())
    assert proxy.failed_reads["train/part-0005.bin"] == 2


def test_a_token_expiring_mid_fetch_is_refreshed_once_for_all_threads(
    gcs: FakeGcs, proxy: GcsProxy, tmp_path
):
    objs, tokens, dest = objects(40, 1_000), _Tokens(lifetime=0.3), tmp_path / "dest"
    source, entries = tokens.listed(gcs, proxy, objs, workers=8, dest=dest)
    proxy.read_delay = 0.1  # 40 reads by 8 threads: about 0.5 s, so the token expires
    progress = _Count()
    source.download(entries, dest, progress)
    assert progress.objects == 40
    assert_matches(dest, objs)
    seen = proxy.authorizations
    assert sum(seen.values()) == 40 and all(t.startswith("Bearer token-") for t in seen)
    assert len(seen) >= 2, seen  # refreshed mid-fetch
    assert tokens.refreshes <= 6, tokens.refreshes  # once per expiry, not once per thread

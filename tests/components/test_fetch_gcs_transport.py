"""How gs:// fetches talk to the server (the real fake-gcs-server, through a counting loopback proxy):
a progress bar on a terminal, gzip-encoded objects kept as stored, the environment's proxy unless
NO_PROXY, and tokens refreshed once when rejected or expiring mid-fetch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from components.data.storage import FetchError
from components.fetch import fetch
from tests.support.fetch import FakeGcs, GcsProxy
from tests.support.fetch_gcs import REPO, assert_matches, bucket_name, objects


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
        from components.data.sources.gcs import GcsSource

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

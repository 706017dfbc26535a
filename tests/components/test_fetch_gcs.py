"""gs:// fetches against the real fake-gcs-server binary, through a counting loopback proxy: what is
fetched, verified, reused and resumed. What goes wrong is in test_fetch_gcs_errors.py, the transport
(progress, gzip, proxies, tokens) in test_fetch_gcs_transport.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from components.data.storage import COMPLETE, MANIFEST
from components.fetch import fetch
from tests.support.fetch import FakeGcs, GcsProxy, fetch_env
from tests.support.fetch_gcs import REPO, assert_matches, bucket_name, objects, run_cli


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

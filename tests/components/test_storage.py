"""The versioned layout itself: lock, resume, crash recovery, name checks, room checks."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from components.data.storage import (
    COMPLETE,
    MANIFEST,
    Entry,
    FetchError,
    Progress,
    TransientFetchError,
    Version,
    crc32c_of_bytes,
    materialize,
    version_lock,
)


class MemorySource:
    """A real (in-memory) source: files given as bytes, counting what it is asked to produce."""

    kind = "memory"
    display = "mem://test"

    def __init__(self, files: dict[str, bytes], fail_after: int | None = None):
        self.files = files
        self.produced: list[str] = []
        self.fail_after = fail_after

    def list_version(self) -> Version:
        entries = [
            Entry(name=n, ref=n, size=len(c), crc32c=crc32c_of_bytes(c))
            for n, c in sorted(self.files.items())
        ]
        return Version(key={"files": [[e.name, e.crc32c] for e in entries]}, entries=entries)

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        for e in entries:
            if self.fail_after is not None and len(self.produced) >= self.fail_after:
                raise TransientFetchError("mem://test: connection lost")
            (dest / e.name).write_bytes(self.files[e.name])
            self.produced.append(e.name)
            progress.advance(e.size or 0)


class _NullProgress:
    def advance(self, nbytes: int, objects: int = 1) -> None:
        pass


@contextlib.contextmanager
def _progress(_b: int, _n: int) -> Iterator[Progress]:
    yield _NullProgress()


def run(root: Path, src: MemorySource) -> tuple[Path, bool]:
    return materialize(root, "ds", src, src.list_version(), progress_factory=_progress)


FILES = {"a.bin": b"a" * 100, "b/c.bin": b"c" * 50, "d.bin": b"d" * 10}


def test_interrupted_fetch_is_never_complete_and_resumes(tmp_path: Path):
    broken = MemorySource(FILES, fail_after=1)
    with pytest.raises(TransientFetchError):
        run(tmp_path, broken)
    base = tmp_path / "data" / "ds"
    assert not list(base.rglob(COMPLETE)) and not list(base.glob("[0-9a-f]*"))
    src = MemorySource(FILES)
    path, downloaded = run(tmp_path, src)
    assert downloaded and src.produced == ["b/c.bin", "d.bin"]  # a.bin was kept
    assert (path / "a.bin").read_bytes() == FILES["a.bin"]
    manifest = json.loads((path / MANIFEST).read_text())
    assert [f["name"] for f in manifest["files"]] == ["a.bin", "b/c.bin", "d.bin"]


def test_renamed_but_not_marked_complete_is_verified_again(tmp_path: Path):
    path, _ = run(tmp_path, MemorySource(FILES))
    (path / COMPLETE).unlink()
    (path / "d.bin").write_bytes(b"torn")
    src = MemorySource(FILES)
    again, downloaded = run(tmp_path, src)
    assert again == path and downloaded and src.produced == ["d.bin"]
    assert (path / "d.bin").read_bytes() == FILES["d.bin"] and (path / COMPLETE).exists()


def test_stray_files_in_tmp_are_removed(tmp_path: Path):
    src = MemorySource(FILES)
    version = src.list_version()
    tmp = tmp_path / "data" / "ds" / f".tmp-{version.hash}"
    tmp.mkdir(parents=True)
    (tmp / "leftover.part").write_bytes(b"junk")
    path, _ = run(tmp_path, src)
    assert not (path / "leftover.part").exists()


@pytest.mark.parametrize(
    "name", ["../escape", "/abs", "a//b", "MANIFEST.json", ".complete", "x/./y"]
)
def test_unsafe_names_are_refused(name: str, tmp_path: Path):
    with pytest.raises(FetchError, match="name unusable as a file path"):
        run(tmp_path, MemorySource({name: b"x"}))


def test_a_name_that_is_also_a_folder_is_refused(tmp_path: Path):
    with pytest.raises(FetchError, match="'a/b' is both a file and a folder"):
        run(tmp_path, MemorySource({"a/b": b"1", "a/b/c": b"2"}))


def test_lock_excludes_a_second_holder_until_released(tmp_path: Path):
    lock = tmp_path / ".lock"
    order: list[str] = []

    def second() -> None:
        with version_lock(lock, timeout=5, label="second"):
            order.append("second holds it")

    with version_lock(lock, timeout=5, label="first"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first releases")
    t.join(5)
    assert order == ["first releases", "second holds it"]


def test_lock_wait_is_bounded(tmp_path: Path):
    lock = tmp_path / ".lock"
    with (
        version_lock(lock, timeout=5),
        pytest.raises(TransientFetchError, match="held .* for over"),
        version_lock(lock, timeout=0.2, label="ds/abc"),
    ):
        pass


class FullDiskSource(MemorySource):
    """Writes land on a full device (``/dev/full`` answers every write with ENOSPC)."""

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        for e in entries:
            (dest / e.name).symlink_to("/dev/full")
        super().download(entries, dest, progress)


def test_disk_filling_up_during_the_download(tmp_path: Path):
    src = FullDiskSource({"big.bin": b"x" * 1000})
    with pytest.raises(FetchError, match=r"mem://test: .*/data/ds ran out of room during"):
        run(tmp_path, src)
    assert not list(tmp_path.rglob(COMPLETE))

"""Versioned datasets on the shared disk (DESIGN.md, "Data").

Layout under ``$SWEEPYARD_SHARED``::

    data/<dataset>/<hash>/...          the files, MANIFEST.json, then .complete (immutable)
    data/<dataset>/.tmp-<hash>/        a download in progress (kept across interruptions)
    data/<dataset>/.lock-<hash>        the lock concurrent fetchers of one version wait on

A version is complete only once ``.complete`` exists: it is written last, after the files and the
manifest are on disk and the temporary folder has been renamed. Anything else is a half-done
fetch, resumed by the next fetcher, which keeps the files whose CRC32C matches and fetches the rest.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import google_crc32c

from components.contract import COMPLETE_FILE as COMPLETE
from components.contract import MANIFEST_FILE as MANIFEST
from components.contract import (
    complete_file,
    dataset_dir,
    dataset_lock,
    dataset_temporary,
    datasets_dir,
    manifest_file,
)
from components.fsio import fsync_dir

log = logging.getLogger("sweepyard.fetch")

HASH_LENGTH = 16
RESERVED_NAMES = frozenset({MANIFEST, COMPLETE})
DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Room kept free beyond the data itself: the manifest, file-system metadata, rounding to blocks.
SPACE_MARGIN_BYTES = 1 << 20
_CHUNK = 1 << 20


class FetchError(Exception):
    """A fetch that retrying cannot fix (bad input, missing data, refused access, no room): exit 3."""


class TransientFetchError(Exception):
    """A fetch that failed for a reason that may pass (network, server errors): exit 1, retry."""


@dataclass(frozen=True)
class Entry:
    """One file of a dataset version.

    Attributes:
        name: path inside the version folder (POSIX, relative).
        ref: where the source finds it (the object's full name, or an absolute path).
        size: bytes, when the listing knows it.
        crc32c: base64 CRC32C (big-endian, as GCS reports it), when the listing knows it; files
            without one are always produced afresh (a database snapshot).
        generation: the object's generation, for sources that have them.
    """

    name: str
    ref: str
    size: int | None = None
    crc32c: str | None = None
    generation: str | None = None


@dataclass
class Version:
    """What a source's listing says a version is: its identity (``key``) and its files."""

    key: dict[str, Any]
    entries: list[Entry]
    extra: dict[str, Any] = field(default_factory=dict)
    estimated_bytes: int | None = None

    @functools.cached_property
    def hash(self) -> str:
        """Short hex content hash of the key (names, generations, CRC32C, or query + result)."""
        text = json.dumps(self.key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


class Progress(Protocol):
    def advance(self, nbytes: int, objects: int = 1) -> None: ...


class Source(Protocol):
    """A place data comes from. ``display`` names it in messages and never holds a secret."""

    display: str
    kind: str

    def list_version(self) -> Version: ...

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        """Write ``entries`` under ``dest`` (by ``Entry.name``), each verified; raise if not."""
        ...


def validate_dataset(name: str) -> str:
    if not DATASET_RE.match(name or ""):
        raise FetchError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def check_entry_names(entries: Sequence[Entry], display: str) -> None:
    """Reject names that would escape the version folder or overwrite its bookkeeping."""
    seen: set[str] = set()
    for e in entries:
        parts = e.name.split("/")
        if (
            not e.name
            or e.name.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or e.name in RESERVED_NAMES
            or "\x00" in e.name
        ):
            raise FetchError(f"{display}: object {e.ref!r} has a name unusable as a file path")
        if e.name in seen:
            raise FetchError(f"{display}: two objects map to the same file {e.name!r}")
        seen.add(e.name)
    folders = {
        "/".join(e.name.split("/")[:i]) for e in entries for i in range(1, e.name.count("/") + 1)
    }
    for e in entries:
        if e.name in folders:
            raise FetchError(
                f"{display}: object {e.ref!r} is both a file and a folder of other objects"
            )


def crc32c_of_file(path: Path) -> str:
    """Base64 of the big-endian CRC32C of a file's content (the form GCS reports)."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def crc32c_of_bytes(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


def matches(path: Path, entry: Entry) -> bool:
    """Whether ``path`` holds exactly the listed content (size, then CRC32C)."""
    if entry.crc32c is None:
        return False
    try:
        if entry.size is not None and path.stat().st_size != entry.size:
            return False
        return crc32c_of_file(path) == entry.crc32c
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def version_lock(
    lock_path: Path, *, timeout: float, poll: float = 0.1, label: str = ""
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``, polling until ``timeout``.

    Linux NFS clients turn ``flock`` into byte-range locks on the server (NLM for NFSv3, as on
    Filestore; native for NFSv4), so fetchers in different pods exclude each other too. A holder
    that dies releases the lock (the kernel closes its descriptor; NFS reclaims it on lease expiry).

    Raises:
        TransientFetchError: when another holder keeps it past ``timeout`` seconds.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not waited:
                log.info("another fetch of %s is downloading it: waiting for it", label)
                waited = True
            if time.monotonic() > deadline:
                raise TransientFetchError(
                    f"{label}: another fetch held {lock_path} for over {timeout:.0f} s"
                )
            time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """Flush every dirty page of the file system holding ``path`` (one call, not one per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (AttributeError, OSError):
        os.sync()
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _prune(tmp: Path, entries: Sequence[Entry]) -> list[Entry]:
    """Keep the files in ``tmp`` that match their entry; delete the rest; return what is missing."""
    expected = {e.name: e for e in entries}
    missing = {e.name for e in entries}
    for dirpath, _dirnames, filenames in os.walk(tmp):
        for filename in filenames:
            path = Path(dirpath) / filename
            name = path.relative_to(tmp).as_posix()
            entry = expected.get(name)
            if entry is not None and matches(path, entry):
                missing.discard(name)
            else:
                if entry is not None:
                    log.info(
                        "%s: %s is incomplete or corrupt on disk: fetching it again", tmp, name
                    )
                path.unlink()
    return [e for e in entries if e.name in missing]


def check_room(folder: Path, needed: int, display: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed + SPACE_MARGIN_BYTES > free:
        raise FetchError(
            f"{display}: not enough room on {folder}: the download needs {human_size(needed)} "
            f"(plus {human_size(SPACE_MARGIN_BYTES)} margin) but only {human_size(free)} is free"
        )


def no_room(folder: Path, display: str) -> FetchError:
    """The error for a disk that filled up while downloading (someone else wrote to it too)."""
    return FetchError(f"{display}: {folder} ran out of room during the download (disk full)")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _manifest(dataset: str, source: Source, version: Version, tmp: Path) -> dict[str, Any]:
    files = []
    for e in version.entries:
        path = tmp / e.name
        item: dict[str, Any] = {
            "name": e.name,
            "size": path.stat().st_size,
            "crc32c": e.crc32c or crc32c_of_file(path),
        }
        if e.generation is not None:
            item["generation"] = e.generation
        files.append(item)
    return {
        "dataset": dataset,
        "hash": version.hash,
        "source": source.display,
        "kind": source.kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "count": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
        **version.extra,
    }


def materialize(
    root: Path,
    dataset: str,
    source: Source,
    version: Version,
    *,
    progress_factory: Callable[[int, int], contextlib.AbstractContextManager[Progress]],
    lock_timeout: float = 6 * 3600,
) -> tuple[Path, bool]:
    """Make ``data/<dataset>/<hash>/`` complete, downloading at most once across fetchers.

    Returns:
        The version's folder, and whether this call downloaded anything (False: reused).
    """
    validate_dataset(dataset)
    digest = version.hash
    base = datasets_dir(root, dataset)
    final = dataset_dir(root, dataset, digest)
    if complete_file(final).exists():  # the names were checked when this version was made
        return final, False
    check_entry_names(version.entries, source.display)
    base.mkdir(parents=True, exist_ok=True)
    label = f"{dataset}/{digest} ({source.display})"
    with version_lock(dataset_lock(root, dataset, digest), timeout=lock_timeout, label=label):
        if complete_file(final).exists():
            return final, False
        tmp = _resumable(final, dataset_temporary(root, dataset, digest))
        missing = _prune(tmp, version.entries)
        if len(missing) < len(version.entries):
            log.info(
                "%s: resuming: %d of %d files already on disk and verified",
                label,
                len(version.entries) - len(missing),
                len(version.entries),
            )
        manifest = _download(base, tmp, dataset, source, version, missing, progress_factory)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(base)
        _write_durably(complete_file(final), f"{digest}\n".encode())
        fsync_dir(final)
        log.info(
            "%s: complete: %d files, %s",
            label,
            manifest["count"],
            human_size(manifest["total_bytes"]),
        )
        return final, True


def _resumable(final: Path, tmp: Path) -> Path:
    """The temporary folder a download goes to, with what an interrupted one left in it (a
    version renamed but never marked complete is resumed like any half-done fetch)."""
    if final.exists():
        if tmp.exists():
            shutil.rmtree(final)
        else:
            os.rename(final, tmp)
    tmp.mkdir(exist_ok=True)
    manifest_file(tmp).unlink(missing_ok=True)
    return tmp


def _download(
    base: Path,
    tmp: Path,
    dataset: str,
    source: Source,
    version: Version,
    missing: list[Entry],
    progress_factory: Callable[[int, int], contextlib.AbstractContextManager[Progress]],
) -> dict[str, Any]:
    """Download ``missing`` into ``tmp`` (room checked first), sync it, write its manifest;
    returns the manifest."""
    if version.estimated_bytes is not None:
        needed = version.estimated_bytes
    else:
        needed = sum(e.size or 0 for e in missing)
    check_room(base, needed, source.display)
    for parent in {(tmp / e.name).parent for e in missing}:
        parent.mkdir(parents=True, exist_ok=True)
    try:
        with progress_factory(needed, len(missing)) as progress:
            source.download(missing, tmp, progress)
        _syncfs(tmp)
        manifest = _manifest(dataset, source, version, tmp)
        _write_durably(manifest_file(tmp), (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_room(base, source.display) from exc
        raise
    return manifest

"""Local sources for development: ``file:///abs/path``, plain paths and ``pkg://module/rel/path``.

A file or a folder; the version is the content (names, sizes, CRC32C), not modification times.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from components.data.storage import (
    Entry,
    FetchError,
    Progress,
    TransientFetchError,
    Version,
    crc32c_of_file,
    matches,
)

MAX_ATTEMPTS = 3


def resolve_file_uri(uri: str) -> Path:
    """``file:///abs/path`` (or ``file://localhost/abs/path``) → the absolute path."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(
            f"malformed source {uri!r}: file:// URIs take an absolute path "
            "(file:///abs/path), not a host"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise FetchError(f"malformed source {uri!r}: the path must be absolute (file:///abs/path)")
    return Path(path)


def resolve_pkg_uri(uri: str) -> Path:
    """``pkg://python.module/relative/path`` → the file shipped inside that installed package."""
    rest = uri[len("pkg://") :]
    module, _, rel = rest.partition("/")
    if not module or not rel:
        raise FetchError(
            f"malformed source {uri!r}: expected pkg://PYTHON.MODULE/RELATIVE/PATH "
            "(e.g. pkg://sklearn.datasets/data/digits.csv.gz)"
        )
    if rel.startswith("/") or ".." in rel.split("/"):
        raise FetchError(f"malformed source {uri!r}: the path must stay inside the package")
    try:
        root = importlib.resources.files(module)
    except (ModuleNotFoundError, TypeError) as exc:
        raise FetchError(f"source {uri!r}: no installed Python package {module!r}") from exc
    target = root.joinpath(rel)
    if not isinstance(target, Path):
        raise FetchError(f"source {uri!r}: package {module!r} is not installed as plain files")
    return target


class FileSource:
    """A file or a folder on a local (or mounted) file system."""

    kind = "file"

    def __init__(self, path: Path, display: str):
        self.path = path
        self.display = display

    def list_version(self) -> Version:
        path = self.path
        if not path.exists():
            raise FetchError(f"{self.display}: no such file or folder {str(path)!r}")
        entries: list[Entry] = []
        try:
            if path.is_file():
                entries.append(self._entry(path.name, path))
            else:
                for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                    dirnames.sort()
                    for filename in sorted(filenames):
                        file = Path(dirpath) / filename
                        if file.is_file():
                            entries.append(self._entry(file.relative_to(path).as_posix(), file))
        except PermissionError as exc:
            raise FetchError(f"{self.display}: permission refused reading {exc.filename}") from exc
        if not entries:
            raise FetchError(f"{self.display}: the folder is empty (no files to fetch)")
        entries.sort(key=lambda e: e.name)
        key = {"files": [[e.name, e.crc32c, e.size] for e in entries]}
        return Version(key=key, entries=entries)

    @staticmethod
    def _entry(name: str, file: Path) -> Entry:
        return Entry(
            name=name, ref=str(file), size=file.stat().st_size, crc32c=crc32c_of_file(file)
        )

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        for entry in entries:
            target = dest / entry.name
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    shutil.copyfile(entry.ref, target)
                except FileNotFoundError as exc:
                    raise TransientFetchError(
                        f"{self.display}: {entry.ref!r} vanished during the fetch: fetch again"
                    ) from exc
                if matches(target, entry):
                    progress.advance(entry.size or 0)
                    break
            else:
                raise TransientFetchError(
                    f"{self.display}: {entry.ref!r} changed while being copied "
                    f"({MAX_ATTEMPTS} attempts): fetch again once it is stable"
                )

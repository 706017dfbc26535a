"""Where data comes from: ``parse_source`` turns a SOURCE argument into a source object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from components.data.sources.files import FileSource, resolve_file_uri, resolve_pkg_uri
from components.data.sources.gcs import GcsSource
from components.data.sources.sql import SqlSource
from components.data.storage import FetchError, Source

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def parse_source(
    uri: str, query: str | None = None, env: Mapping[str, str] | None = None
) -> Source:
    """A source for ``uri``: ``gs://``, ``file://``, ``pkg://``, a plain path, or a database URL.

    Raises:
        FetchError: for a malformed or unsupported source, or a query given to a non-database one.
    """
    env = os.environ if env is None else env
    uri = (uri or "").strip()
    if not uri:
        raise FetchError(
            "malformed source '': give gs://BUCKET/PREFIX, file:///PATH, pkg://MODULE/PATH, a path, or a database URL"
        )
    match = SCHEME_RE.match(uri)
    scheme = match.group(1).lower() if match else ""
    if scheme in ("", "gs", "file", "pkg") and query:
        raise FetchError(f"source {uri!r}: --query applies only to a database URL")
    if scheme == "gs":
        return GcsSource(uri, env)
    if scheme in ("file", "pkg"):
        path = resolve_file_uri(uri) if scheme == "file" else resolve_pkg_uri(uri)
        return FileSource(path, uri)
    if scheme in ("s3", "gcs", "http", "https", "ftp", "hdfs", "az", "abfs"):
        raise FetchError(
            f"malformed source {uri!r}: {scheme}:// is not supported "
            "(use gs://BUCKET/PREFIX, file:///PATH, pkg://MODULE/PATH or a database URL)"
        )
    if scheme:
        return SqlSource(uri, query, env)
    if ":" in uri.split("/", 1)[0] and not Path(uri).exists():
        raise FetchError(f"malformed source {uri!r}: expected SCHEME://..., or a path")
    return FileSource(Path(uri).absolute(), uri)

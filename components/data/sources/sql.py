"""A table from a database: a SQLAlchemy URL plus a query, snapshotted to ``table.parquet``.

The password never travels in the URL: it comes from ``SWEEPYARD_DB_PASSWORD`` (in the cluster, a
``secretKeyRef``). A URL that carries one is refused without echoing it. The version is keyed by
the query and the SHA-256 of the result (Arrow IPC stream), so an unchanged table is reused and
changed rows give a new version. Give the query an ``ORDER BY`` for a stable row order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.data.storage import (
    Entry,
    FetchError,
    Progress,
    TransientFetchError,
    Version,
)

PASSWORD_ENV = "SWEEPYARD_DB_PASSWORD"
TABLE_FILE = "table.parquet"


def database_url(url: str, env: Mapping[str, str] | None = None) -> Any:
    """The SQLAlchemy URL with the password from the secret env; reject one written in the URL.

    Raises:
        FetchError: for a malformed URL or one that contains a password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    env = os.environ if env is None else env
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise FetchError(
            f"malformed database source: {_scrub(url)!r} is not a SQLAlchemy URL"
        ) from exc
    try:
        parsed.get_dialect()
    except (ArgumentError, ImportError) as exc:
        raise FetchError(
            f"malformed source {_scrub(url)!r}: {parsed.drivername!r} is neither gs://, file://, "
            "pkg:// nor a database SQLAlchemy knows"
        ) from exc
    if parsed.password is not None:
        shown = parsed.render_as_string(hide_password=True)
        raise FetchError(
            f"database source {shown}: the URL contains a password; remove it from the URL and "
            f"provide it through the secret (env {PASSWORD_ENV}, a secretKeyRef in the cluster)"
        )
    password = env.get(PASSWORD_ENV)
    if password:
        parsed = parsed.set(password=password)
    return parsed


def _scrub(url: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host`` for messages about bad URLs."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        creds, _, host = tail.rpartition("@")
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{head}://{creds}@{host}"
    return url


class SqlSource:
    """The result of one query, frozen as a Parquet file on the shared disk."""

    kind = "sql"

    def __init__(self, url: str, query: str | None, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.url = database_url(url, self.env)
        self.display = self.url.render_as_string(hide_password=True)
        if not query or not query.strip():
            raise FetchError(f"database source {self.display}: --query is required")
        self.query = query.strip()
        self._table: Any = None
        self._secret = self.env.get(PASSWORD_ENV) or None

    def _hide(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def list_version(self) -> Version:
        """Run the query (this is the listing: the result is what gets versioned)."""
        import pyarrow as pa
        import sqlalchemy
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        engine = sqlalchemy.create_engine(self.url, pool_pre_ping=False)
        try:
            with engine.connect() as conn:
                result = conn.execute(sqlalchemy.text(self.query))
                columns = list(result.keys())
                rows = result.fetchall()
        except DBAPIError as exc:
            message = self._hide(str(exc.orig).strip())
            if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError):
                raise TransientFetchError(
                    f"database source {self.display}: cannot connect or run the query: {message}"
                ) from None
            raise FetchError(
                f"database source {self.display}: the query failed: {message}"
            ) from None
        except SQLAlchemyError as exc:
            raise FetchError(
                f"database source {self.display}: {self._hide(type(exc).__name__)}: "
                f"{self._hide(str(exc))}"
            ) from None
        finally:
            engine.dispose()
        table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        result_sha = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
        self._table = table
        key = {"query": self.query, "result_sha256": result_sha}
        extra = {
            "query": self.query,
            "rows": table.num_rows,
            "columns": columns,
            "result_sha256": result_sha,
        }
        entry = Entry(name=TABLE_FILE, ref=self.query)
        return Version(key=key, entries=[entry], extra=extra, estimated_bytes=table.nbytes)

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        import pyarrow.parquet as pq

        if not entries:
            return
        if self._table is None:
            raise TransientFetchError(f"database source {self.display}: no snapshot taken")
        target = dest / TABLE_FILE
        pq.write_table(self._table, target)
        progress.advance(target.stat().st_size)

"""``gs://bucket/prefix``: list, then download in parallel with CRC32C verified per object.

Credentials: Application Default Credentials on the cluster (workload identity),
``GOOGLE_APPLICATION_CREDENTIALS`` elsewhere. With ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server),
anonymous credentials and the project from ``GOOGLE_CLOUD_PROJECT`` (default ``sweepyard``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from errno import EDQUOT, ENOSPC
from pathlib import Path
from typing import Any

from components.runtime.storage import (
    Entry,
    FetchError,
    Progress,
    TransientFetchError,
    Version,
    matches,
    no_room,
)

log = logging.getLogger("sweepyard.fetch")

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
MAX_ATTEMPTS = 3
DEFAULT_WORKERS = 32
DEFAULT_RETRY_TIMEOUT = 120.0


def parse_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/prefix`` → (bucket, prefix without surrounding slashes)."""
    rest = uri[len("gs://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise FetchError(f"malformed source {uri!r}: no bucket (expected gs://BUCKET/PREFIX)")
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise FetchError(
            f"malformed source {uri!r}: {bucket!r} is not a valid bucket name "
            "(3-222 lowercase letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit)"
        )
    if "//" in prefix.rstrip("/"):
        raise FetchError(f"malformed source {uri!r}: empty path segment in the prefix")
    return bucket, prefix.strip("/")


def _relative(name: str, prefix: str) -> str | None:
    """An object's path inside the version folder; None when it lies outside the prefix."""
    if not prefix:
        return name
    if name == prefix:
        return name.rsplit("/", 1)[-1]
    if name.startswith(prefix + "/"):
        return name[len(prefix) + 1 :]
    return None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1
    if value <= 0:
        raise FetchError(f"{name}={raw!r}: expected a positive number")
    return value


class GcsSource:
    """Objects under a prefix of a bucket (or one object, when the prefix names it)."""

    kind = "gcs"

    def __init__(self, uri: str, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.bucket_name, self.prefix = parse_gs(uri)
        self.display = f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")
        self.workers = int(_number(self.env, "SWEEPYARD_FETCH_WORKERS", DEFAULT_WORKERS))
        self.retry_timeout = _number(
            self.env, "SWEEPYARD_FETCH_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT
        )
        self._client: Any = None

    # -- client ---------------------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is not None:
            return self._client
        import requests
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        try:
            emulator = self.env.get("STORAGE_EMULATOR_HOST", "").strip()
            if emulator:
                from google.auth.credentials import AnonymousCredentials

                if "://" not in emulator:
                    emulator = f"http://{emulator}"
                client = storage.Client(
                    project=self.env.get("GOOGLE_CLOUD_PROJECT", "sweepyard"),
                    credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": emulator.rstrip("/")},
                )
            else:
                client = storage.Client(project=self.env.get("GOOGLE_CLOUD_PROJECT") or None)
        except DefaultCredentialsError as exc:
            raise FetchError(
                f"{self.display}: no Google credentials found (Application Default Credentials "
                "or GOOGLE_APPLICATION_CREDENTIALS)"
            ) from exc
        # The library fetches bucket metadata in the background to tag trace spans: one more
        # request per fetch, and one needing storage.buckets.get, which a reader may lack.
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            client._bucket_metadata_cache = None
        # One pooled connection per download thread (requests keeps 10 by default).
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(self.workers, 10)
        )
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        self._client = client
        return client

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_timeout)

    # -- errors ---------------------------------------------------------------------------------

    def _translate(self, exc: BaseException, doing: str) -> Exception:
        """Map a client error to FetchError (permanent) or TransientFetchError."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import DefaultCredentialsError, RefreshError

        if isinstance(exc, gexc.NotFound):
            return FetchError(f"{self.display}: bucket {self.bucket_name!r} does not exist")
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            code = getattr(exc, "code", "")
            return FetchError(
                f"{self.display}: permission refused ({code}) {doing}: the credentials in use "
                "need storage.objects.list and storage.objects.get on the bucket"
            )
        if isinstance(exc, DefaultCredentialsError | RefreshError):
            return FetchError(f"{self.display}: credentials unusable {doing}: {exc}")
        if isinstance(exc, gexc.BadRequest):
            return FetchError(f"{self.display}: request refused {doing}: {exc.message}")
        return TransientFetchError(f"{self.display}: {doing} failed: {exc}")

    # -- listing --------------------------------------------------------------------------------

    def list_version(self) -> Version:
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError
        from requests.exceptions import RequestException

        client = self.client()
        entries: list[Entry] = []
        try:
            blobs = client.list_blobs(
                self.bucket_name,
                prefix=self.prefix or None,
                fields="items(name,size,generation,crc32c),nextPageToken",
                retry=self._retry(),
                timeout=60,
            )
            # The raw pages, not Blob objects: a listing is the whole cost of reusing a version.
            for page in blobs.pages:
                for item in page.raw_page.get("items", ()):
                    name = item["name"]
                    rel = None if name.endswith("/") else _relative(name, self.prefix)
                    if rel is None:
                        continue  # a folder placeholder, or a sibling sharing the string prefix
                    entries.append(
                        Entry(
                            name=rel,
                            ref=name,
                            size=int(item.get("size") or 0),
                            crc32c=item.get("crc32c"),
                            generation=str(item.get("generation", "")) or None,
                        )
                    )
        except (GoogleAuthError, RequestException, gexc.GoogleAPIError, OSError) as exc:
            raise self._translate(exc, "listing objects") from exc
        if not entries:
            where = f"under prefix {self.prefix!r}" if self.prefix else "in the bucket"
            raise FetchError(f"{self.display}: no objects {where} (empty listing)")
        entries.sort(key=lambda e: e.name)
        for e in entries:
            if not e.crc32c:
                raise FetchError(f"{self.display}: object {e.ref!r} has no CRC32C in the listing")
        key = {"objects": [[e.name, e.generation, e.crc32c, e.size] for e in entries]}
        return Version(key=key, entries=entries, extra={"bucket": self.bucket_name})

    # -- download -------------------------------------------------------------------------------

    def download(self, entries: Sequence[Entry], dest: Path, progress: Progress) -> None:
        """Download with ``transfer_manager`` (threads), verify each file, retry bad ones."""
        from google.api_core import exceptions as gexc
        from google.cloud.storage import transfer_manager

        client = self.client()
        bucket = client.bucket(self.bucket_name)
        pending = list(entries)
        last_error: dict[str, str] = {}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not pending:
                return
            if attempt > 1:
                log.info("%s: attempt %d for %d objects", self.display, attempt, len(pending))
            failed: list[Entry] = []
            batch = max(self.workers * 4, 64)
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                pairs = [
                    (
                        bucket.blob(e.ref, generation=int(e.generation) if e.generation else None),
                        str(dest / e.name),
                    )
                    for e in chunk
                ]
                results = transfer_manager.download_many(
                    pairs,
                    # The stored bytes exactly (no transparent gunzip), checked against the
                    # listing's CRC32C by ``matches`` below rather than by the library.
                    download_kwargs={
                        "checksum": None,
                        "raw_download": True,
                        "retry": self._retry(),
                    },
                    worker_type=transfer_manager.THREAD,
                    max_workers=self.workers,
                )
                for entry, result in zip(chunk, results, strict=True):
                    path = dest / entry.name
                    if isinstance(result, gexc.NotFound):
                        raise TransientFetchError(
                            f"{self.display}: object {entry.ref!r} generation {entry.generation} "
                            "vanished during the fetch (the source changed): fetch again"
                        ) from result
                    if isinstance(result, gexc.Forbidden | gexc.Unauthorized):
                        raise self._translate(result, f"reading {entry.ref!r}") from result
                    if isinstance(result, OSError) and result.errno in (ENOSPC, EDQUOT):
                        raise no_room(dest.parent, self.display) from result
                    if isinstance(result, BaseException):
                        last_error[entry.name] = f"{type(result).__name__}: {result}"
                    elif matches(path, entry):
                        progress.advance(entry.size or 0)
                        continue
                    else:
                        last_error[entry.name] = "CRC32C mismatch after download"
                        log.warning(
                            "%s: %s failed its CRC32C check: fetching it again",
                            self.display,
                            entry.ref,
                        )
                    path.unlink(missing_ok=True)
                    failed.append(entry)
            pending = failed
        if pending:
            first = pending[0]
            raise TransientFetchError(
                f"{self.display}: {len(pending)} object(s) still failing after {MAX_ATTEMPTS} "
                f"attempts, e.g. {first.ref!r}: {last_error.get(first.name, 'unknown error')}"
            )

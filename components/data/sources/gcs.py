"""``gs://bucket/prefix``: list with google-cloud-storage, then GET the objects' bytes in parallel.

The listing names each object's generation and CRC32C; threads then read exactly those generations
with plain pooled HTTP (the client library costs milliseconds of CPU per object), at the client's
endpoint with its credentials, and check each body against the listing's CRC32C as it is written.

Credentials: Application Default Credentials on the cluster (workload identity),
``GOOGLE_APPLICATION_CREDENTIALS`` elsewhere. With ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server),
anonymous credentials and the project from ``GOOGLE_CLOUD_PROJECT`` (default ``sweepyard``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from errno import EDQUOT, ENOSPC
from pathlib import Path
from typing import Any
from urllib.parse import quote

from components.data.sources.gcs_media import Media, TryAgain
from components.data.storage import (
    Entry,
    FetchError,
    Progress,
    TransientFetchError,
    Version,
    no_room,
)

log = logging.getLogger("sweepyard.fetch")

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
MAX_ATTEMPTS = 3
DEFAULT_WORKERS = 32
DEFAULT_RETRY_TIMEOUT = 120.0
# google-cloud-storage: "true" stops the background bucket-metadata lookups its trace spans make
GCS_BUCKET_METADATA_OFF = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds: the pause doubles per try, drawn in [0, pause)


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


def _default_credentials(scopes: Sequence[str]) -> Any:
    """The credentials ``storage.Client`` would find by itself (Application Default Credentials,
    scoped as it scopes them); anonymous when ``STORAGE_EMULATOR_HOST`` is in this process's
    environment, where the client skips authentication.

    Raises:
        DefaultCredentialsError: none found.
    """
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return AnonymousCredentials()
    credentials, _ = google.auth.default(scopes=scopes)
    return credentials


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

    def __init__(self, uri: str, env: Mapping[str, str] | None = None, credentials: Any = None):
        self.env = os.environ if env is None else env
        self.credentials = credentials  # None: ADC, or anonymous with the emulator
        self.bucket_name, self.prefix = parse_gs(uri)
        self.display = f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")
        self.workers = int(_number(self.env, "SWEEPYARD_FETCH_WORKERS", DEFAULT_WORKERS))
        self.retry_timeout = _number(
            self.env, "SWEEPYARD_FETCH_RETRY_TIMEOUT", DEFAULT_RETRY_TIMEOUT
        )
        self._client: Any = None
        self._media: tuple[Any, Any] | None = None  # the client's credentials and ClientInfo

    # -- client ---------------------------------------------------------------------------------

    def client(self) -> Any:
        """The storage client; its credentials and user agent are the ones :class:`Media` uses
        (held here: the client keeps both private)."""
        if self._client is not None:
            return self._client
        from google.api_core.client_info import ClientInfo
        from google.auth.credentials import AnonymousCredentials
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        info = ClientInfo()  # the client's default; its connection adds the library's version
        try:
            emulator = self.env.get("STORAGE_EMULATOR_HOST", "").strip()
            if emulator:
                if "://" not in emulator:
                    emulator = f"http://{emulator}"
                credentials = self.credentials
                if credentials is None:
                    credentials = AnonymousCredentials()
                client = storage.Client(
                    project=self.env.get("GOOGLE_CLOUD_PROJECT", "sweepyard"),
                    credentials=credentials,
                    client_info=info,
                    client_options={"api_endpoint": emulator.rstrip("/")},
                )
            else:
                credentials = self.credentials
                if credentials is None:
                    credentials = _default_credentials(storage.Client.SCOPE)
                client = storage.Client(
                    project=self.env.get("GOOGLE_CLOUD_PROJECT") or None,
                    credentials=credentials,
                    client_info=info,
                )
        except DefaultCredentialsError as exc:
            raise FetchError(
                f"{self.display}: no Google credentials found (Application Default Credentials "
                "or GOOGLE_APPLICATION_CREDENTIALS)"
            ) from exc
        # The library fetches bucket metadata in the background to tag trace spans: one more
        # request per fetch, and one needing storage.buckets.get, which a reader may lack. Its
        # switch is process-wide, an environment variable it reads on each request.
        os.environ.setdefault(GCS_BUCKET_METADATA_OFF, "true")
        self._client, self._media = client, (credentials, info)
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
            return self._refused(getattr(exc, "code", ""), doing)
        if isinstance(exc, DefaultCredentialsError | RefreshError):
            return FetchError(f"{self.display}: credentials unusable {doing}: {exc}")
        if isinstance(exc, gexc.BadRequest):
            return FetchError(f"{self.display}: request refused {doing}: {exc.message}")
        return TransientFetchError(f"{self.display}: {doing} failed: {exc}")

    def _refused(self, code: object, doing: str) -> FetchError:
        return FetchError(
            f"{self.display}: permission refused ({code}) {doing}: the credentials in use "
            "need storage.objects.list and storage.objects.get on the bucket"
        )

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
        """GET each object's listed generation with ``self.workers`` threads; retry bad ones."""
        client = self.client()
        assert self._media is not None
        credentials, info = self._media
        media = Media(client.api_endpoint, credentials, info.to_user_agent(), self.workers)
        pending = list(entries)
        last_error: dict[str, str] = {}
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sweepyard-fetch")
        try:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if not pending:
                    return
                if attempt > 1:
                    log.info("%s: attempt %d for %d objects", self.display, attempt, len(pending))
                reads = {pool.submit(self._read, media, e, dest): e for e in pending}
                failed: list[Entry] = []
                for done in as_completed(reads):
                    entry = reads[done]
                    error = done.result()
                    if error is None:
                        progress.advance(entry.size or 0)
                        continue
                    last_error[entry.name] = error
                    failed.append(entry)
                pending = failed
        finally:
            pool.shutdown(cancel_futures=True)
        if pending:
            first = pending[0]
            raise TransientFetchError(
                f"{self.display}: {len(pending)} object(s) still failing after {MAX_ATTEMPTS} "
                f"attempts, e.g. {first.ref!r}: {last_error.get(first.name, 'unknown error')}"
            )

    def _read(self, media: Media, entry: Entry, dest: Path) -> str | None:
        """Write one object under ``dest`` and verify it: None when done, else why not (no file left).

        Server errors and failed connections are tried again, with exponential backoff and
        jitter, for up to ``self.retry_timeout`` seconds.
        """
        from google.auth.exceptions import GoogleAuthError

        url, path = self._url(media.endpoint, entry), dest / entry.name
        deadline = time.monotonic() + self.retry_timeout
        delay = BACKOFF_FIRST
        refreshed = False
        while True:
            try:
                status, crc = media.get(url, path)
                if status == 401 and not refreshed and media.refresh_rejected():
                    refreshed = True  # a token revoked before its expiry: one new token, once
                    continue
                break
            except TryAgain as exc:
                pause = max(random.uniform(0, delay), exc.after)  # the server's Retry-After wins
                if time.monotonic() + pause > deadline:
                    asked = f" (the server asked to wait {exc.after:g} s)" if exc.after else ""
                    return f"{exc}{asked}"
                time.sleep(pause)
                delay = min(delay * 2, BACKOFF_MAX)
            except OSError as exc:  # writing the file (a failed connection is TryAgain)
                if exc.errno in (ENOSPC, EDQUOT):
                    raise no_room(dest.parent, self.display) from exc
                return f"writing {path}: {exc}"
            except GoogleAuthError as exc:  # a token refresh refused
                raise self._translate(exc, f"reading {entry.ref!r}") from exc
        if status == 200:
            if crc == entry.crc32c:  # of the bytes as they were written
                return None
            log.warning(
                "%s: %s failed its CRC32C check: fetching it again", self.display, entry.ref
            )
            path.unlink(missing_ok=True)
            return "CRC32C mismatch after download"
        if status == 404:
            raise TransientFetchError(
                f"{self.display}: object {entry.ref!r} generation {entry.generation} "
                "vanished during the fetch (the source changed): fetch again"
            )
        if status in (401, 403):
            raise self._refused(status, f"reading {entry.ref!r}")
        return f"HTTP {status} reading {entry.ref!r}"

    def _url(self, endpoint: str, entry: Entry) -> str:
        """The media URL google-cloud-storage builds for this object and generation."""
        url = f"{endpoint}/download/storage/v1/b/{self.bucket_name}/o/{quote(entry.ref, safe='')}"
        url += "?alt=media"
        return f"{url}&generation={entry.generation}" if entry.generation else url

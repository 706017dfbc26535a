"""``gs://bucket/prefix``: list with google-cloud-storage, then GET the objects' bytes in parallel.

The listing names each object's generation and CRC32C; threads then read exactly those generations
with plain pooled HTTP (the client library costs milliseconds of CPU per object), at the client's
endpoint with its credentials, and check each body against the listing's CRC32C as it is written.

Credentials: Application Default Credentials on the cluster (workload identity),
``GOOGLE_APPLICATION_CREDENTIALS`` elsewhere. With ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server),
anonymous credentials and the project from ``GOOGLE_CLOUD_PROJECT`` (default ``sweepyard``).
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from errno import EDQUOT, ENOSPC
from pathlib import Path
from typing import Any
from urllib.parse import quote

import google_crc32c

from components.runtime.storage import (
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
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds: the pause doubles per try, drawn in [0, pause)
CONNECT_TIMEOUT, READ_TIMEOUT = 20.0, 60.0
CHUNK = 1 << 20


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
        media = _Media(self.client(), self.workers)
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

    def _read(self, media: _Media, entry: Entry, dest: Path) -> str | None:
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
            except _TryAgain as exc:
                pause = max(random.uniform(0, delay), exc.after)  # the server's Retry-After wins
                if time.monotonic() + pause > deadline:
                    asked = f" (the server asked to wait {exc.after:g} s)" if exc.after else ""
                    return f"{exc}{asked}"
                time.sleep(pause)
                delay = min(delay * 2, BACKOFF_MAX)
            except OSError as exc:  # writing the file (a failed connection is _TryAgain)
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


class _TryAgain(Exception):
    """A read worth trying again: a server error, a dropped or timed-out connection.

    ``after``: the seconds the server's ``Retry-After`` asked for (0 when it named none).
    """

    def __init__(self, message: str, after: float = 0.0):
        super().__init__(message)
        self.after = after


def retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); 0 when absent."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


class _Media:
    """Plain GETs of object bytes: the client's endpoint and credentials, pooled connections.

    Proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and the CA bundle (``REQUESTS_CA_BUNDLE``) are
    resolved once, as requests would for the endpoint; a token about to expire is refreshed, and
    so is one the server rejects (401) before its expiry, as google-auth's sessions do.
    """

    def __init__(self, client: Any, connections: int):
        import google.auth.transport.requests
        import requests
        import urllib3
        from requests.adapters import HTTPAdapter
        from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy

        self.endpoint: str = client.api_endpoint
        self._credentials = client._credentials
        self._auth_request = google.auth.transport.requests.Request()
        self._auth_lock = threading.Lock()
        self._local = threading.local()  # the token each thread's last request carried
        # The stored bytes exactly (never gunzipped): the listing's CRC32C is of those.
        self._headers = {"Accept-Encoding": "gzip", "User-Agent": client._connection.user_agent}
        settings = requests.Session().merge_environment_settings(
            self.endpoint, {}, None, None, None
        )
        ca = settings["verify"] if isinstance(settings["verify"], str) else DEFAULT_CA_BUNDLE_PATH
        tls: dict[str, Any] = {"ca_cert_dir" if os.path.isdir(ca) else "ca_certs": ca}
        proxy = select_proxy(self.endpoint, settings["proxies"])
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        self._http: urllib3.PoolManager = (
            HTTPAdapter(pool_connections=1, pool_maxsize=connections).proxy_manager_for(
                proxy, **tls
            )
            if proxy
            else urllib3.PoolManager(num_pools=1, maxsize=connections, **tls)
        )

    def get(self, url: str, path: Path) -> tuple[int, str | None]:
        """GET ``url``; a 200's body goes to ``path`` as sent.

        Returns:
            The status, and the base64 CRC32C of the body written (None when there is none).

        Raises:
            _TryAgain: for a status worth retrying, or a failed connection or token refresh.
        """
        import urllib3
        from google.auth.exceptions import TransportError

        headers = dict(self._headers)
        crc = None
        try:
            with self._auth_lock:  # one refresh when the token expires, not one per thread
                self._credentials.before_request(self._auth_request, "GET", url, headers)
                self._local.token = getattr(self._credentials, "token", None)
            resp = self._http.request(
                "GET", url, headers=headers, preload_content=False, retries=False,
                redirect=False, timeout=self._timeout,
            )  # fmt: skip
            try:
                if resp.status == 200:
                    checksum = google_crc32c.Checksum()
                    with open(path, "wb") as f:
                        for chunk in resp.stream(CHUNK, decode_content=False):
                            f.write(chunk)
                            checksum.update(chunk)
                    crc = base64.b64encode(checksum.digest()).decode("ascii")
                else:
                    resp.drain_conn()
            except BaseException:
                resp.close()  # a body read halfway: its connection cannot carry another request
                path.unlink(missing_ok=True)  # and never a partial file taken for a whole one
                raise
            finally:
                resp.release_conn()
        except (urllib3.exceptions.HTTPError, TransportError) as exc:
            raise _TryAgain(f"{type(exc).__name__}: {exc}") from exc
        if resp.status in RETRY_STATUSES:
            after = retry_after(resp.headers.get("Retry-After"))
            raise _TryAgain(f"HTTP {resp.status} {resp.reason}", after)
        return resp.status, crc

    def refresh_rejected(self) -> bool:
        """After a 401: a new token unless another thread already got one; False when none can be.

        Raises:
            GoogleAuthError: the refresh itself was refused.
        """
        rejected = getattr(self._local, "token", None)
        if rejected is None:  # anonymous (the emulator): nothing to refresh
            return False
        with self._auth_lock:
            if getattr(self._credentials, "token", None) == rejected:
                self._credentials.refresh(self._auth_request)
        return True

"""Plain pooled GETs of GCS object bytes, with the client's endpoint, credentials and proxies.

:class:`Media` writes one object's body as sent (never gunzipped) and its CRC32C as it writes;
:class:`TryAgain` marks what is worth another try (with the server's ``Retry-After``). The retry
loop, and what each final status means, stay with the source (:mod:`components.data.sources.gcs`).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path
from typing import Any

import google_crc32c

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT, READ_TIMEOUT = 20.0, 60.0
CHUNK = 1 << 20


class TryAgain(Exception):
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


class Media:
    """Plain GETs of object bytes: the client's endpoint and credentials, pooled connections.

    Proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and the CA bundle (``REQUESTS_CA_BUNDLE``) are
    resolved once, as requests would for the endpoint; a token about to expire is refreshed, and
    so is one the server rejects (401) before its expiry, as google-auth's sessions do.
    """

    def __init__(self, endpoint: str, credentials: Any, user_agent: str, connections: int):
        import google.auth.transport.requests
        import requests
        import urllib3
        from requests.adapters import HTTPAdapter
        from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy

        self.endpoint = endpoint
        self._credentials = credentials
        self._auth_request = google.auth.transport.requests.Request()
        self._auth_lock = threading.Lock()
        self._local = threading.local()  # the token each thread's last request carried
        # The stored bytes exactly (never gunzipped): the listing's CRC32C is of those.
        self._headers = {"Accept-Encoding": "gzip", "User-Agent": user_agent}
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
            TryAgain: for a status worth retrying, or a failed connection or token refresh.
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
            raise TryAgain(f"{type(exc).__name__}: {exc}") from exc
        if resp.status in RETRY_STATUSES:
            after = retry_after(resp.headers.get("Retry-After"))
            raise TryAgain(f"HTTP {resp.status} {resp.reason}", after)
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

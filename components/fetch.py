"""The data stage: materialise one version of a dataset on the shared disk, exactly once.

``python -m components.fetch SOURCE --dataset NAME [--query SQL]`` lists the source, derives the
version's content hash, downloads it once into ``data/<dataset>/<hash>/`` (however many fetchers
run at the same time), prints ``{"path": ..., "hash": ...}`` and writes both as output parameters.

Environment: ``SWEEPYARD_SHARED`` (the shared disk), ``SWEEPYARD_OUTPUTS`` (output parameters,
default /tmp/outputs); for gs://, Application Default Credentials or
``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST`` (+ ``GOOGLE_CLOUD_PROJECT``) for an
emulator; for a database, ``SWEEPYARD_DB_PASSWORD`` (a secret, never in the URL). Tuning:
``SWEEPYARD_FETCH_WORKERS`` (parallel downloads, 32), ``SWEEPYARD_FETCH_RETRY_TIMEOUT`` (seconds
of retrying one request, 120), ``SWEEPYARD_FETCH_LOCK_TIMEOUT`` (seconds to wait for another
fetcher of the same version, 6 h).

Exit codes: 0 done · 3 retrying cannot help (bad source, missing or refused data, no room) ·
1 a transient failure (network, server): the step's retryStrategy tries again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.contract import (
    EXIT_GIVE_UP,
    EXIT_RETRY,
    OUTPUT_DATA_HASH,
    OUTPUT_DATA_PATH,
    SharedRootError,
    outputs_dir,
    shared_root,
)
from components.data.sources.sql import PASSWORD_ENV
from components.data.storage import (
    FetchError,
    Progress,
    TransientFetchError,
    materialize,
    validate_dataset,
)
from components.step_start import start_step

log = logging.getLogger("sweepyard.fetch")
_exit_log = logging.getLogger("sweepyard.fetch.exit")

EXIT_TRANSIENT = EXIT_RETRY


@dataclass(frozen=True)
class FetchResult:
    path: Path
    hash: str
    downloaded: bool


def fetch(
    source: str,
    dataset: str,
    *,
    query: str | None = None,
    shared: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> FetchResult:
    """Make the source's current version complete under the shared disk and return where it is.

    Raises:
        FetchError: when retrying cannot help; the message names the source and the problem.
        TransientFetchError: when it may (network, server errors, a source changing mid-fetch).
    """
    from components.data.progress import progress_for
    from components.data.sources import parse_source

    env = os.environ if env is None else env
    validate_dataset(dataset)
    try:
        root = shared if shared is not None else shared_root(env).absolute()
    except SharedRootError as exc:
        raise FetchError(str(exc)) from exc
    src = parse_source(source, query, env)
    version = src.list_version()
    lock_timeout = float(env.get("SWEEPYARD_FETCH_LOCK_TIMEOUT", 6 * 3600))

    def progress_factory(
        total_bytes: int, total_objects: int
    ) -> contextlib.AbstractContextManager[Progress]:
        return progress_for(f"{dataset} ({src.display})", total_bytes, total_objects)

    path, downloaded = materialize(
        root,
        dataset,
        src,
        version,
        progress_factory=progress_factory,
        lock_timeout=lock_timeout,
    )
    if not downloaded:
        log.info("%s/%s: already complete, reused (%s)", dataset, version.hash, src.display)
    return FetchResult(path=path, hash=version.hash, downloaded=downloaded)


def write_outputs(result: FetchResult, env: Mapping[str, str] | None = None) -> Path:
    """Write the ``path`` and ``hash`` output parameters under ``$SWEEPYARD_OUTPUTS``."""
    env = os.environ if env is None else env
    outputs = outputs_dir(env)
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / OUTPUT_DATA_PATH).write_text(str(result.path))
    (outputs / OUTPUT_DATA_HASH).write_text(result.hash)
    return outputs


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_GIVE_UP, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m components.fetch",
        description="Fetch one version of a dataset to the shared disk (once) and print its path.",
    )
    parser.add_argument(
        "source",
        help="gs://BUCKET/PREFIX, file:///PATH, a path, pkg://MODULE/PATH, or a database URL "
        "(password from env SWEEPYARD_DB_PASSWORD, never in the URL)",
    )
    parser.add_argument(
        "--dataset", required=True, help="the folder under data/ on the shared disk"
    )
    parser.add_argument("--query", default=None, help="SQL query, for a database source")
    return parser


# ``scheme://user:password@`` anywhere in a string.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)([^@\s'\"]+)(@)")


def _secrets(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Strings no Sentry event may carry: the DB secret, and a password typed into a URL."""
    found = [m.group(2) for arg in argv for m in _URL_PASSWORD.finditer(arg)]
    if env.get(PASSWORD_ENV):
        found.append(env[PASSWORD_ENV])
    return sorted(set(found), key=len, reverse=True)


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (an event: dicts, lists, strings) with every secret and URL password masked."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return _URL_PASSWORD.sub(r"\1***\3", value)
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _guard_events(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Mask secrets in every Sentry event (stack-frame variables and sys.argv included)."""
    import sentry_sdk

    secrets = _secrets(argv, env)
    sentry_sdk.get_global_scope().add_event_processor(lambda event, _hint: scrub(event, secrets))
    # The exit line below is logged for people; the exception is reported once, explicitly.
    from sentry_sdk.integrations.logging import ignore_logger

    ignore_logger(_exit_log.name)


def _report(exc: BaseException, alerts: bool) -> None:
    if alerts:
        import sentry_sdk

        sentry_sdk.capture_exception(exc)
        sentry_sdk.flush(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    alerts = start_step("fetch")
    if alerts:
        _guard_events(sys.argv if argv is None else [*sys.argv[:1], *argv], os.environ)
    args = _parser().parse_args(argv)
    try:
        result = fetch(args.source, args.dataset, query=args.query)
        write_outputs(result)
    except FetchError as exc:
        _exit_log.error("error: %s", exc)
        _report(exc, alerts)
        return EXIT_GIVE_UP
    except TransientFetchError as exc:
        _exit_log.error("transient error (the step will be retried): %s", exc)
        _report(exc, alerts)
        return EXIT_TRANSIENT
    print(json.dumps({"path": str(result.path), "hash": result.hash}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

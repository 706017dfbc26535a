"""Error reporting to Sentry (DESIGN.md, "Alerts"). Every component's CLI calls :func:`init_alerts` first.

What it guarantees once ``SENTRY_DSN`` is set:

- every event is tagged with ``component``, ``pipeline``, ``sweep``, ``trial``, ``attempt``,
  ``image`` and ``workflow``;
- errors are grouped per trial and error (the default stack-trace grouping plus the trial id), so one
  bug in five trials is five issues that each count their retries, not one issue of mixed trials;
- a ``before_send`` scrubs every secret value it knows of from the whole event (messages, frame
  variables, breadcrumbs, tags, extra): the values of environment variables whose names look
  secret (``*_DSN``, ``*_TOKEN``, ``*_KEY``, ``*_PASSWORD``, ``*_SECRET``, ``*WEBHOOK*``, ...),
  passwords inside URLs in the environment, the private key of ``GOOGLE_APPLICATION_CREDENTIALS``,
  and anything given to :func:`register_secret`;
- an unhandled exception reaches Sentry before the process exits (``sys.excepthook`` captures it
  and flushes the queue, then prints the traceback, scrubbed).

With or without a DSN, :func:`init_alerts` also scrubs the same secrets from every log record of
the process and from the traceback of an unhandled error.

:func:`scrub` is the same scrubber for anything else that leaves the process (logs, Slack text).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
# Values shorter than this are not scrubbed by value: replacing "1" or "true" everywhere would
# destroy events; such values are not secrets anyway.
MIN_SECRET_LENGTH = 6
FLUSH_TIMEOUT_S = 5.0

_SECRET_SUFFIXES = (
    "_DSN",
    "_TOKEN",
    "_KEY",
    "_APIKEY",
    "_PASSWORD",
    "_PASSWD",
    "_PASS",
    "_PWD",
    "_SECRET",
    "_CREDENTIALS",
)
_SECRET_PARTS = ("WEBHOOK", "SECRET", "PASSWORD", "TOKEN", "PRIVATE_KEY", "API_KEY")
# Keys (of dicts, frame variables) whose values are dropped whatever they hold.
_SECRET_KEY_RE = re.compile(
    r"(^|_)(dsn|token|password|passwd|secret|webhook|webhook_url|api_?key|private_key|credentials?)($|_)",
    re.IGNORECASE,
)
_CREDENTIAL_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token")

_registered: set[str] = set()
_sorted_cache: list[str] | None = None
_lock = threading.Lock()
_previous_excepthook: Callable[..., Any] | None = None
_previous_factory: Callable[..., logging.LogRecord] | None = None


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    upper = name.upper()
    return upper.endswith(_SECRET_SUFFIXES) or any(part in upper for part in _SECRET_PARTS)


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every Sentry event (and :func:`scrub` output) from now on."""
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        global _sorted_cache
        with _lock:
            _registered.add(value.strip())
            if value != value.strip():
                _registered.add(value)
            _sorted_cache = None


def _registered_sorted() -> list[str]:
    """The registered secrets, longest first (cached until the next registration)."""
    global _sorted_cache
    with _lock:
        if _sorted_cache is None:
            _sorted_cache = sorted(_registered, key=len, reverse=True)
        return _sorted_cache


def secret_values(env: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value known now: registered ones plus those found in ``env``.

    From the environment: values of secret-looking names, passwords embedded in URLs
    (``scheme://user:password@host``) of any variable, and the private fields of the JSON key file
    named by ``GOOGLE_APPLICATION_CREDENTIALS``.
    """
    env = os.environ if env is None else env
    found: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if is_secret_name(name):
            found.add(value.strip())
        found.update(_url_passwords(value))
    found.update(_credential_file_secrets(env.get("GOOGLE_APPLICATION_CREDENTIALS", "")))
    with _lock:
        found.update(_registered)
    return {v for v in found if len(v) >= MIN_SECRET_LENGTH}


def _url_passwords(value: str) -> Iterable[str]:
    if "://" not in value or "@" not in value:
        return ()
    try:
        parsed = urllib.parse.urlsplit(value.strip())
    except ValueError:
        return ()
    out = []
    if parsed.password:
        out.append(parsed.password)
        out.append(urllib.parse.unquote(parsed.password))
    return out


def _credential_file_secrets(path: str) -> Iterable[str]:
    if not path:
        return ()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return ()
    if not isinstance(data, dict):
        return ()
    out: list[str] = []
    for field in _CREDENTIAL_FIELDS:
        value = data.get(field)
        if isinstance(value, str):
            out.append(value)
            # A PEM key also appears line by line in tracebacks and reprs.
            out.extend(line for line in value.splitlines() if len(line) >= 16)
    return out


def strip_url_credentials(url: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x``: a URL safe to show in links and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def scrub(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of ``obj`` (str, dict, list, tuple; nested) with every secret value replaced.

    Values under secret-looking keys (``token``, ``password``, ``webhook_url``, ...) are replaced
    whole. Strings that Sentry truncated (ending in ``...``) lose a trailing partial secret too.
    """
    ordered = sorted(secret_values() if secrets is None else set(secrets), key=len, reverse=True)
    return _scrub(obj, ordered)


def _scrub(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return _scrub_text(obj, secrets)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            clean_key = _scrub_text(key, secrets) if isinstance(key, str) else key
            if isinstance(key, str) and _SECRET_KEY_RE.search(key) and value not in (None, "", {}):
                out[clean_key] = FILTERED
            else:
                out[clean_key] = _scrub(value, secrets)
        return out
    if isinstance(obj, list):
        return [_scrub(v, secrets) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_scrub(v, secrets) for v in obj)
    return obj


def _scrub_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    if text.endswith(("...", "\u2026")):
        body = text.rstrip(".\u2026")
        for secret in secrets:
            for k in range(len(secret) - 1, 3, -1):
                if body.endswith(secret[:k]):
                    return body[: len(body) - k] + FILTERED + "..."
    return text


def _before_send(event: Any, hint: dict[str, Any]) -> Any:
    event = _scrub(event, sorted(secret_values(), key=len, reverse=True))
    trial = (event.get("tags") or {}).get("trial")
    if trial and "exception" in event and not event.get("fingerprint"):
        event["fingerprint"] = ["{{ default }}", f"trial:{trial}"]
    return event


def _before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    return _scrub(crumb, sorted(secret_values(), key=len, reverse=True))


def init_alerts(
    component: str,
    *,
    sweep_id: str | None = None,
    trial_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Initialise Sentry when ``SENTRY_DSN`` is set; return whether it was.

    Tags every event with pipeline, sweep, trial, attempt and image; groups errors per trial and
    error; scrubs secrets; installs the excepthook that reports an unhandled error before exit.
    Secret values of ``env`` are registered even when Sentry is off, so :func:`scrub` knows them.
    """
    env = os.environ if env is None else env
    for value in secret_values(env):
        register_secret(value)
    install_log_scrubber()
    _install_excepthook()
    dsn = env.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.excepthook import ExcepthookIntegration

    image = env.get("SWEEPYARD_IMAGE", "")
    sentry_sdk.init(
        dsn=dsn,
        send_default_pii=False,
        release=image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else None,
        environment=env.get("SWEEPYARD_ENVIRONMENT") or None,
        before_send=_before_send,
        before_breadcrumb=_before_breadcrumb,
        # Ours replaces it: it also flushes before the interpreter goes down.
        disabled_integrations=[ExcepthookIntegration()],
        shutdown_timeout=FLUSH_TIMEOUT_S,
    )
    tags = {
        "component": component,
        "pipeline": env.get("SWEEPYARD_PIPELINE", ""),
        "sweep": sweep_id or "",
        "trial": trial_id or "",
        "attempt": env.get("SWEEPYARD_ATTEMPT", "0") or "0",
        "image": image,
        "workflow": env.get("SWEEPYARD_WORKFLOW_NAME", ""),
    }
    for key, value in tags.items():
        if value:  # Sentry drops empty tag values as invalid: leave the tag out instead
            sentry_sdk.set_tag(key, value)
    return True


def set_alert_tags(**tags: str | None) -> None:
    """Update tags after init (e.g. the sweep id once it is resolved); no-op without Sentry."""
    sentry_sdk = sys.modules.get("sentry_sdk")  # never imported: never initialised (no import cost)
    if sentry_sdk is None or not sentry_sdk.is_initialized():
        return
    for key, value in tags.items():
        if value:
            sentry_sdk.set_tag(key, value)
        else:
            sentry_sdk.get_isolation_scope().remove_tag(key)


def report_error(exc: BaseException, *, handled: bool = True) -> str | None:
    """Send ``exc`` to Sentry now and wait for it to leave; return the event id (None when off).

    For components that catch an error and exit with a code of their own (a trial giving up with
    exit 3, say): the excepthook only sees errors that escape.
    """
    import sentry_sdk

    if not sentry_sdk.is_initialized():
        return None
    event_id = _capture((type(exc), exc, exc.__traceback__), handled=handled)
    sentry_sdk.flush(timeout=FLUSH_TIMEOUT_S)
    return event_id


def _capture(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None], *, handled: bool
) -> str | None:
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    client = sentry_sdk.get_client()
    event, hint = event_from_exception(
        exc_info,
        client_options=client.options,
        mechanism={"type": "excepthook" if not handled else "sweepyard", "handled": handled},
    )
    return sentry_sdk.capture_event(event, hint=hint)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    try:
        import sentry_sdk

        if sentry_sdk.is_initialized() and not issubclass(exc_type, KeyboardInterrupt):
            _capture((exc_type, exc, tb), handled=False)
            sentry_sdk.flush(timeout=FLUSH_TIMEOUT_S)
    except Exception:  # never let reporting hide the real traceback
        log.debug("could not report the unhandled error to Sentry", exc_info=True)
    previous = _previous_excepthook or sys.__excepthook__
    if previous is not sys.__excepthook__:
        previous(exc_type, exc, tb)
        return
    # The default hook, but the traceback (messages, reprs) scrubbed of secrets on its way to the log.
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(scrub(text))
    sys.stderr.flush()


def install_log_scrubber() -> None:
    """Scrub secret values from every log record of this process (message, args, traceback).

    A record factory rather than a handler filter, so it covers every handler, including those of
    libraries (slack-sdk logs the webhook URL it retries, for one).
    """
    global _previous_factory
    if _previous_factory is not None:
        return
    _previous_factory = logging.getLogRecordFactory()
    previous = _previous_factory

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            secrets = _registered_sorted()
            message = record.getMessage()
            clean = _scrub_text(message, secrets)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[0] is not None:
                formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                record.exc_text = _scrub_text(formatted, secrets)
        except Exception:  # a record that cannot be formatted is logging's problem, not ours
            pass
        return record

    logging.setLogRecordFactory(factory)


def _install_excepthook() -> None:
    global _previous_excepthook
    if sys.excepthook is not _excepthook:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook

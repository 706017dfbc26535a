"""Error reporting to Sentry (DESIGN.md, "Alerts"). Every component's CLI calls :func:`init_alerts` first."""

from __future__ import annotations

import os
from collections.abc import Mapping


def init_alerts(
    component: str,
    *,
    sweep_id: str | None = None,
    trial_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Initialise Sentry when ``SENTRY_DSN`` is set; return whether it was.

    Tags every event with pipeline, sweep, trial, attempt and image.
    """
    env = os.environ if env is None else env
    dsn = env.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, send_default_pii=False)
    tags = {
        "component": component,
        "pipeline": env.get("SWEEPYARD_PIPELINE", ""),
        "sweep": sweep_id or "",
        "trial": trial_id or "",
        "attempt": env.get("SWEEPYARD_ATTEMPT", "0"),
        "image": env.get("SWEEPYARD_IMAGE", ""),
    }
    for key, value in tags.items():
        sentry_sdk.set_tag(key, value)
    return True

"""What every step's ``main`` starts with: one log format on stderr, and alerts for the step.

The six steps (``plan``, ``suggest``, ``fetch``, ``train``, ``compare``, ``notify``) log in one
format, so a step's log reads the same in Argo's UI, in ``make status`` and in a local run's
``logs/``; alerts (:func:`components.runtime.alerts.init_alerts`) register the secrets to scrub
and, with ``SENTRY_DSN``, tag every event with the step. The sweep and trial tags follow once the
step has resolved them (:func:`components.runtime.alerts.set_alert_tags`).
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def start_step(step: str) -> bool:
    """Configure logging and alerts for ``step``; whether Sentry is on."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from components.runtime.alerts import init_alerts

    return init_alerts(step)

"""Broken variants of the compiled sweep: CronWorkflow schedules.

Every variant starts from the golden ``pipelines/compiled/sweep.yaml`` (or ``sweep-cron.yaml``),
breaks one thing, and must get exactly the listed problems, no more, no fewer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.validate_broken import Doc, _problems, _template


def cron6(d: Doc) -> None:
    d["spec"]["schedules"] = ["0 3 * * * *"]


def cron_garbage(d: Doc) -> None:
    d["spec"]["schedules"] = ["every day at 3am"]


def cron_range(d: Doc) -> None:
    d["spec"]["schedules"] = ["61 * * * *"]


def cron_singular(d: Doc) -> None:
    d["spec"]["schedule"] = "0 3 * * *"


def cron_tz(d: Doc) -> None:
    d["spec"]["timezone"] = "Mars/Olympus"


def cron_policy(d: Doc) -> None:
    d["spec"]["concurrencyPolicy"] = "Sometimes"


def cron_inner(d: Doc) -> None:
    _template(d, "train")["retryStrategy"]["retryPolicy"] = "Never"


def cron_name(d: Doc) -> None:
    d["metadata"]["name"] = "x" * 53


def ok_cron_descr(d: Doc) -> None:
    d["spec"]["schedules"] = ["@daily", "CRON_TZ=Europe/Paris 0 3 * * 1-5", "*/15 2,3 1-7 * MON"]


CRON_VARIANTS: list[tuple[Callable[[Doc], None], list[str]]] = [
    (
        cron6,
        [
            "spec.schedules[0]: '0 3 * * * *' has 6 fields; a schedule needs exactly 5 (minute hour day-of-month month day-of-week)"
        ],
    ),
    (
        cron_garbage,
        [
            "spec.schedules[0]: 'every day at 3am' has 4 fields; a schedule needs exactly 5 (minute hour day-of-month month day-of-week)"
        ],
    ),
    (cron_range, ["spec.schedules[0]: '61 * * * *' is not a valid cron expression"]),
    (
        cron_singular,
        [
            "spec.schedule: unknown field 'schedule' in CronWorkflowSpec: Argo v4 removed 'schedule': use 'schedules', a list of 5-field cron expressions"
        ],
    ),
    (cron_tz, ["spec.timezone: unknown time zone 'Mars/Olympus'"]),
    (cron_policy, ["spec.concurrencyPolicy: 'Sometimes' is not one of Allow, Forbid, Replace"]),
    (
        cron_inner,
        [
            "spec.workflowSpec.templates[train].retryStrategy.retryPolicy: 'Never' is not a valid retry policy: one of Always, OnFailure, OnError, OnTransientError"
        ],
    ),
    (cron_name, ["metadata.name: CronWorkflow name must be at most 52 characters"]),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), CRON_VARIANTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_broken_cron(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    assert _problems("sweep-cron.yaml", mutate) == expected


def test_cron_descriptors_time_zone_prefix_and_ranges_are_accepted() -> None:
    assert _problems("sweep-cron.yaml", ok_cron_descr) == []


def test_five_garbage_fields_are_not_a_schedule() -> None:
    def garbage(d: Doc) -> None:
        d["spec"]["schedules"] = ["a b c d e"]

    assert _problems("sweep-cron.yaml", garbage) == [
        "spec.schedules[0]: 'a b c d e' is not a valid cron expression"
    ]

"""The 5-field → KFP 6-field cron translation (KFP parses seconds first, robfig/cron v1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from croniter import croniter

from pipelines.cron import CronError, to_kfp

TRANSLATIONS = [
    ("0 3 * * *", "0 0 3 * * *"),  # never "second 0 of minute 3 of every hour"
    ("*/15 * * * *", "0 */15 * * * *"),
    ("30 2 * * 1-5", "0 30 2 * * 1-5"),
    ("0 0 1 * *", "0 0 0 1 * *"),
    ("0 9,17 * * mon-fri", "0 0 9,17 * * mon-fri"),
    ("0 6 * jan,jul *", "0 0 6 * jan,jul *"),
    ("5 4 ? * sun", "0 5 4 ? * sun"),
    ("0 12 * * 7", "0 0 12 * * 0"),  # Sunday as 7: robfig/cron knows only 0
    ("0 12 * * 5-7", "0 0 12 * * 0,5,6"),
    ("0 12 * * 0,7", "0 0 12 * * 0"),
    ("10-40/10 */2 1-15 */3 *", "0 10-40/10 */2 1-15 */3 *"),
    ("  0   3  *  *  *  ", "0 0 3 * * *"),
    ("0 3 * * MON", "0 0 3 * * mon"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@monthly", "0 0 0 1 * *"),
    ("@yearly", "0 0 0 1 1 *"),
]

REJECTED = [
    ("", "empty cron expression"),
    ("0 0 3 * * *", "6 fields look like a KFP"),
    ("0 3 * *", "got 4"),
    ("0 0 3 * * * 2027", "got 7"),
    ("60 3 * * *", "minute field '60': 60 is outside 0-59"),
    ("0 24 * * *", "hour field '24': 24 is outside 0-23"),
    ("0 3 0 * *", "day of month field '0': 0 is outside 1-31"),
    ("0 3 * 13 *", "month field '13'"),
    ("0 3 * * 8", "day of week field '8'"),
    ("0 3 L * *", "L, W, # and H are not supported"),
    ("0 3 * * 1#2", "L, W, # and H are not supported"),
    ("0 3 15W * *", "L, W, # and H are not supported"),
    ("H 3 * * *", "L, W, # and H are not supported"),
    ("0 3 * * fri-mon", "runs backwards"),
    ("*/0 * * * *", "a step must be at least 1"),
    ("? 3 * * *", "'?' is only allowed in the day fields"),
    ("0 3 * * funday", "'funday' is not a number from 0 to 7 or a name (sun..sat)"),
    ("@every 1h", "unsupported macro"),
    ("@reboot", "unsupported macro"),
    ("0 3 * * 1,,2", "cannot read ''"),
]


@pytest.mark.parametrize(("five", "six"), TRANSLATIONS)
def test_translation_table(five: str, six: str) -> None:
    assert to_kfp(five) == six


@pytest.mark.parametrize(("expression", "message"), REJECTED)
def test_untranslatable_expressions_are_rejected_with_the_field_named(
    expression: str, message: str
) -> None:
    with pytest.raises(CronError) as err:
        to_kfp(expression)
    assert message in str(err.value)


@pytest.mark.parametrize(("five", "six"), [t for t in TRANSLATIONS if not t[0].startswith("@")])
def test_translation_fires_at_the_same_instants(five: str, six: str) -> None:
    """croniter reads 6 fields seconds-*last*; rotate KFP's seconds field there to compare."""
    seconds, *rest = six.split()
    rotated = " ".join([*rest, seconds])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    a, b = croniter(five, start), croniter(rotated, start)
    for _ in range(50):
        assert a.get_next(datetime) == b.get_next(datetime)


def test_the_config_schedule_is_translated() -> None:
    from pipelines.config import load_config

    cfg = load_config("sweep")
    assert cfg.schedule is not None
    assert to_kfp(cfg.schedule.cron) == "0 0 3 * * *"

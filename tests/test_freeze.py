"""Freeze windows: recurring (cron in a time zone) and dated, and what the refusal says."""

from __future__ import annotations

import datetime as dt

import pytest

from conveyor.approvals.freeze import active_freeze
from conveyor.config import FreezeWindow

UTC = dt.UTC
WEEKEND = FreezeWindow.model_validate(
    {"cron": "0 18 * * FRI", "duration": "62h", "timezone": "Europe/Berlin", "reason": "weekend"}
)
YEAR_END = FreezeWindow.model_validate(
    {"from": "2026-12-20", "to": "2027-01-04", "reason": "year end"}
)


@pytest.mark.parametrize(
    ("now", "frozen"),
    [
        (dt.datetime(2026, 12, 4, 16, 59, tzinfo=UTC), False),  # Friday 17:59 in Berlin
        (dt.datetime(2026, 12, 4, 17, 0, tzinfo=UTC), True),  # Friday 18:00 in Berlin
        (dt.datetime(2026, 12, 7, 6, 59, tzinfo=UTC), True),  # Monday 07:59
        (dt.datetime(2026, 12, 7, 7, 0, tzinfo=UTC), False),  # Monday 08:00: 62 h later
    ],
)
def test_a_weekly_window_in_its_time_zone(now: dt.datetime, frozen: bool) -> None:
    assert (active_freeze([WEEKEND], now) is not None) is frozen


def test_a_dated_window_includes_its_last_day() -> None:
    assert active_freeze([YEAR_END], dt.datetime(2026, 12, 19, 23, 59, tzinfo=UTC)) is None
    inside = active_freeze([YEAR_END], dt.datetime(2027, 1, 4, 23, 0, tzinfo=UTC))
    assert inside is not None and inside.ends == dt.datetime(2027, 1, 5, tzinfo=UTC)
    assert active_freeze([YEAR_END], dt.datetime(2027, 1, 5, tzinfo=UTC)) is None


def test_the_refusal_names_the_window_and_its_end() -> None:
    # Friday 25 Dec 2026, 20:00 in Berlin: both windows; the year end lasts longer.
    found = active_freeze([WEEKEND, YEAR_END], dt.datetime(2026, 12, 25, 19, tzinfo=UTC))
    assert found is not None and found.window is YEAR_END
    message = found.message("production")
    assert "production is frozen: year end" in message
    assert "until 2027-01-05 00:00 UTC" in message and "--break-glass" in message
    weekend = active_freeze([WEEKEND], dt.datetime(2026, 12, 5, 12, tzinfo=UTC))
    assert weekend is not None
    assert "until 2026-12-07 08:00 CET (2026-12-07 07:00 UTC)" in weekend.message("production")


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"cron": "0 18 * * FRX", "duration": "1h"}, "not a valid cron expression"),
        ({"cron": "0 18 * * FRI"}, "needs both 'cron' and 'duration'"),
        ({"from": "2026-12-20"}, "needs both 'from' and 'to'"),
        ({"cron": "0 18 * * FRI", "duration": "1h", "to": "2027-01-01"}, "either"),
        (
            {"from": "2026-12-20", "to": "2027-01-04", "timezone": "Mars/Olympus"},
            "unknown time zone",
        ),
    ],
)
def test_bad_windows_are_config_errors(window: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FreezeWindow.model_validate(window)

"""Freeze windows: is an environment closed for promotions now, by which window, until when?"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

from cronsim import CronSim

from conveyor.config.approval import FreezeWindow


@dataclass(frozen=True)
class ActiveFreeze:
    window: FreezeWindow
    started: dt.datetime
    ends: dt.datetime

    def message(self, environment: str) -> str:
        return (
            f"{environment} is frozen: {self.window.describe()}, since "
            f"{self.started:%Y-%m-%d %H:%M %Z}, until {self.ends:%Y-%m-%d %H:%M %Z} "
            f"({self.ends.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC); promote with "
            "--break-glass --reason TEXT to go on anyway, with one approver more"
        )


def _at(value: dt.date | dt.datetime, zone: zoneinfo.ZoneInfo, end: bool) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    day = value + dt.timedelta(days=1) if end else value
    return dt.datetime.combine(day, dt.time(), tzinfo=zone)


def _interval(window: FreezeWindow, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The occurrence of ``window`` that contains ``now``, if any."""
    zone = zoneinfo.ZoneInfo(window.timezone)
    if window.cron is None or window.duration is None:
        assert window.start is not None and window.to is not None
        start, end = _at(window.start, zone, end=False), _at(window.to, zone, end=True)
        return (start, end) if start <= now < end else None
    local = now.astimezone(zone)
    # cronsim's reverse iteration excludes its start; one second later includes ``now``.
    # Every occurrence lasts as long, so the latest start has the latest end: if it does
    # not cover now, no earlier one does. The end is wall-clock time (Friday 18:00 plus
    # 62 h is Monday 08:00 across a DST change too), which is what people schedule by.
    start = next(CronSim(window.cron, local + dt.timedelta(seconds=1), reverse=True))
    end = start + window.duration
    return (start, end) if local < end else None


def active_freeze(windows: Iterable[FreezeWindow], now: dt.datetime) -> ActiveFreeze | None:
    """The window ``now`` lies in, with the latest end when several overlap."""
    found = [(w, *span) for w in windows if (span := _interval(w, now)) is not None]
    if not found:
        return None
    window, start, end = max(found, key=lambda f: f[2])
    return ActiveFreeze(window, start, end)

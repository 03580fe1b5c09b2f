"""Budget windows: calendar-aligned spans in a tenant's time zone, and their counters' lifetimes.

``hourly`` starts on the hour, ``daily`` at midnight, ``weekly`` at Monday midnight and
``monthly`` at midnight on the 1st, all in the tenant's IANA time zone (UTC by default). A
window is the half-open span ``[start, end)``; across a daylight-saving change a day is 23 or
25 hours long, and an hour that is repeated is one window per UTC hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache, cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from router.errors import ConfigError

WINDOWS: tuple[str, ...] = ("hourly", "daily", "weekly", "monthly")

#: How long a spent counter outlives its window's end.
COUNTER_GRACE_S = 86_400


@dataclass(frozen=True)
class WindowSpan:
    """One window around a moment: its name, start, end and the label its key carries."""

    window: str
    start: datetime
    end: datetime

    @cached_property
    def label(self) -> str:
        """The start written for a key name: ``2026-11-22T13``, ``2026-11-22`` or ``2026-11``.

        Outside UTC the label is the local start followed by its UTC offset and the zone
        (``2026-11-22+0100@Europe/Berlin``), so that two zones never share a counter.
        """
        if self.window == "hourly":
            text = self.start.strftime("%Y-%m-%dT%H")
        elif self.window == "monthly":
            text = self.start.strftime("%Y-%m")
        else:
            text = self.start.strftime("%Y-%m-%d")
        tz = self.start.tzinfo
        if tz is None or tz is UTC:
            return text
        return f"{text}{self.start.strftime('%z')}@{tz}"

    @cached_property
    def start_ms(self) -> int:
        return math.floor(self.start.timestamp() * 1000)

    @cached_property
    def end_ms(self) -> int:
        return math.floor(self.end.timestamp() * 1000)


def check_window(window: str) -> str:
    """Return ``window`` if it is a known window name, else raise ``ConfigError``."""
    if window not in WINDOWS:
        raise ConfigError(f"unknown budget window {window!r}; use one of {', '.join(WINDOWS)}")
    return window


@cache
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (IANA, e.g. ``Europe/Berlin``); ``UTC`` is ``datetime.UTC``."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from exc


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _local_midnight(day: datetime, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _normalised(local: datetime) -> datetime:
    """``local`` (a wall time in its zone) made real: a time in a DST gap moves forward."""
    return local.astimezone(UTC).astimezone(local.tzinfo)


def window_span(window: str, now: datetime, tz: tzinfo = UTC) -> WindowSpan:
    """The window named ``window`` that contains ``now`` (an aware datetime), in zone ``tz``."""
    check_window(window)
    if now.tzinfo is None:
        raise ValueError("window_span needs an aware datetime; naive times are ambiguous")
    if tz is UTC:
        return _utc_span(window, now.astimezone(UTC))
    t = now.astimezone(tz)
    if window == "hourly":
        # Flooring keeps ``fold``, so a repeated wall hour is two windows, one per UTC hour.
        start = t.replace(minute=0, second=0, microsecond=0)
        end = (start.astimezone(UTC) + timedelta(hours=1)).astimezone(tz)
        return WindowSpan(window, start, end)
    day = _local_midnight(t, tz)
    if window == "daily":
        start = day
        nxt = day.date() + timedelta(days=1)
    elif window == "weekly":
        start = _local_midnight(day - timedelta(days=day.weekday()), tz)
        nxt = start.date() + timedelta(days=7)
    else:
        start = _local_midnight(day.replace(day=1), tz)
        nxt = (
            start.date().replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.date().replace(month=start.month + 1)
        )
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return WindowSpan(window, _normalised(start), _normalised(end))


def _utc_span(window: str, t: datetime) -> WindowSpan:
    if window == "hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        return WindowSpan(window, start, start + timedelta(hours=1))
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        return WindowSpan(window, midnight, midnight + timedelta(days=1))
    if window == "weekly":
        start = midnight - timedelta(days=midnight.weekday())
        return WindowSpan(window, start, start + timedelta(days=7))
    start = midnight.replace(day=1)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return WindowSpan(window, start, end)


def counter_ttl_s(span: WindowSpan, now: datetime, grace_s: int = COUNTER_GRACE_S) -> int:
    """Seconds a counter written at ``now`` must live: to the window's end plus ``grace_s``."""
    left = (span.end - now).total_seconds()
    return max(1, math.ceil(left)) + grace_s

"""Budget windows: UTC, calendar-aligned spans and how long their counters must live.

``hourly`` starts on the hour, ``daily`` at midnight, ``weekly`` at Monday midnight and
``monthly`` at midnight on the 1st. A window is the half-open span ``[start, end)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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

    @property
    def label(self) -> str:
        """The start written for a key name: ``2026-11-22T13``, ``2026-11-22`` or ``2026-11``."""
        if self.window == "hourly":
            return self.start.strftime("%Y-%m-%dT%H")
        if self.window == "monthly":
            return self.start.strftime("%Y-%m")
        return self.start.strftime("%Y-%m-%d")


def check_window(window: str) -> str:
    """Return ``window`` if it is a known window name, else raise ``ConfigError``."""
    if window not in WINDOWS:
        raise ConfigError(f"unknown budget window {window!r}; use one of {', '.join(WINDOWS)}")
    return window


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def window_span(window: str, now: datetime) -> WindowSpan:
    """The window named ``window`` that contains ``now`` (an aware datetime)."""
    check_window(window)
    if now.tzinfo is None:
        raise ValueError("window_span needs an aware datetime; naive times are ambiguous")
    t = now.astimezone(UTC)
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

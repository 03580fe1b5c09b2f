"""Window arithmetic of the budget ledger: boundaries, labels and counter lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from router.errors import ConfigError, InvalidRequest
from router.ledger.keys import TenantKeys
from router.ledger.refusal import format_usd
from router.ledger.windows import (
    COUNTER_GRACE_S,
    WINDOWS,
    counter_ttl_s,
    utc_from_timestamp,
    window_span,
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "start", "end", "label"),
    [
        (at(2026, 11, 22, 13, 45, 7), at(2026, 11, 22, 13), at(2026, 11, 22, 14), "2026-11-22T13"),
        (at(2026, 12, 31, 23, 59, 59), at(2026, 12, 31, 23), at(2027, 1, 1), "2026-12-31T23"),
        (at(2026, 11, 22, 0), at(2026, 11, 22, 0), at(2026, 11, 22, 1), "2026-11-22T00"),
    ],
)
def test_hourly(now: datetime, start: datetime, end: datetime, label: str) -> None:
    span = window_span("hourly", now)
    assert (span.start, span.end, span.label) == (start, end, label)


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (at(2026, 11, 22, 13, 45), at(2026, 11, 22), at(2026, 11, 23)),
        (at(2026, 12, 31, 23, 59, 59), at(2026, 12, 31), at(2027, 1, 1)),
        (at(2028, 2, 28, 12), at(2028, 2, 28), at(2028, 2, 29)),
        (at(2028, 2, 29, 0), at(2028, 2, 29), at(2028, 3, 1)),
    ],
)
def test_daily(now: datetime, start: datetime, end: datetime) -> None:
    span = window_span("daily", now)
    assert (span.start, span.end) == (start, end)
    assert span.label == start.strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("now", "monday"),
    [
        (at(2026, 11, 22, 23, 59), at(2026, 11, 16)),  # a Sunday belongs to the week before
        (at(2026, 11, 23, 0, 0), at(2026, 11, 23)),  # Monday midnight starts a new week
        (at(2026, 11, 25, 8), at(2026, 11, 23)),
        (at(2027, 1, 2, 5), at(2026, 12, 28)),  # a week across the new year
        (at(2028, 3, 1, 0), at(2028, 2, 28)),  # and across a leap day
    ],
)
def test_weekly_starts_monday(now: datetime, monday: datetime) -> None:
    span = window_span("weekly", now)
    assert span.start == monday
    assert span.start.weekday() == 0
    assert span.end == monday + timedelta(days=7)
    assert span.label == monday.strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("now", "start", "end", "days"),
    [
        (at(2026, 1, 31, 23, 59), at(2026, 1, 1), at(2026, 2, 1), 31),
        (at(2026, 2, 14), at(2026, 2, 1), at(2026, 3, 1), 28),
        (at(2028, 2, 29, 12), at(2028, 2, 1), at(2028, 3, 1), 29),
        (at(2100, 2, 10), at(2100, 2, 1), at(2100, 3, 1), 28),  # not a leap year
        (at(2000, 2, 10), at(2000, 2, 1), at(2000, 3, 1), 29),  # a leap year
        (at(2026, 4, 30, 23), at(2026, 4, 1), at(2026, 5, 1), 30),
        (at(2026, 12, 31, 23, 59, 59), at(2026, 12, 1), at(2027, 1, 1), 31),
    ],
)
def test_monthly(now: datetime, start: datetime, end: datetime, days: int) -> None:
    span = window_span("monthly", now)
    assert (span.start, span.end) == (start, end)
    assert (span.end - span.start).days == days
    assert span.label == start.strftime("%Y-%m")


@pytest.mark.parametrize("window", WINDOWS)
def test_every_window_contains_now_and_is_half_open(window: str) -> None:
    now = at(2026, 11, 22, 13, 45, 7)
    span = window_span(window, now)
    assert span.start <= now < span.end
    assert window_span(window, span.end).start == span.end
    assert window_span(window, span.end - timedelta(microseconds=1)).start == span.start


def test_other_time_zones_are_converted_to_utc() -> None:
    # 01:30 on Monday 23 Nov in UTC+3 is 22:30 on Sunday 22 Nov in UTC.
    local = datetime(2026, 11, 23, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    assert window_span("daily", local).start == at(2026, 11, 22)
    assert window_span("weekly", local).start == at(2026, 11, 16)


def test_naive_times_and_unknown_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        window_span("daily", datetime(2026, 11, 22))
    with pytest.raises(ConfigError, match="yearly"):
        window_span("yearly", at(2026, 11, 22))


def test_timestamps_are_read_as_utc() -> None:
    assert utc_from_timestamp(1_795_305_600.5) == at(2026, 11, 22, 0, 0, 0) + timedelta(
        microseconds=500_000
    )


@pytest.mark.parametrize("window", WINDOWS)
def test_counter_ttl_outlives_the_window(window: str) -> None:
    now = at(2026, 2, 27, 22, 10, 0)
    span = window_span(window, now)
    ttl = counter_ttl_s(span, now)
    assert now + timedelta(seconds=ttl) > span.end
    assert ttl == (span.end - now).total_seconds() + COUNTER_GRACE_S


def test_counter_ttl_rounds_up_and_stays_positive() -> None:
    span = window_span("hourly", at(2026, 11, 22, 13))
    assert counter_ttl_s(span, span.end - timedelta(milliseconds=1), grace_s=0) == 1
    assert counter_ttl_s(span, span.end, grace_s=0) == 1
    assert counter_ttl_s(span, span.start + timedelta(seconds=0.5), grace_s=10) == 3600 + 10


def test_key_names_carry_the_tenant_hash_tag_and_window_start() -> None:
    keys = TenantKeys("ttc", "acme")
    span = window_span("daily", at(2026, 11, 22, 9))
    assert keys.spent(span) == "ttc:{t:acme}:spent:daily:2026-11-22"
    assert keys.spent(window_span("monthly", at(2026, 11, 22))) == (
        "ttc:{t:acme}:spent:monthly:2026-11"
    )
    names = [keys.holds, keys.hold_amounts, keys.held_total, keys.audit, keys.request("r-1")]
    assert all(n.startswith("ttc:{t:acme}:") for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("tenant", ["", "a{b", "a}b", "x" * 300])
def test_tenants_that_would_break_the_hash_tag_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidRequest):
        TenantKeys("ttc", tenant)


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "$0.00"),
        (1, "$0.000001"),
        (125, "$0.000125"),
        (10_000, "$0.01"),
        (1_500_000, "$1.50"),
        (12_345_678_900, "$12,345.6789"),
    ],
)
def test_usd_formatting_is_exact(micros: int, text: str) -> None:
    assert format_usd(micros) == text


# --- windows in a tenant's time zone --------------------------------------------------------

BERLIN = "Europe/Berlin"


def test_daily_window_starts_at_local_midnight() -> None:
    from router.ledger.windows import zone

    span = window_span("daily", at(2026, 11, 22, 23, 30), zone(BERLIN))  # 00:30 in Berlin
    assert span.start.astimezone(UTC) == at(2026, 11, 22, 23)
    assert span.end.astimezone(UTC) == at(2026, 11, 23, 23)
    assert span.label == "2026-11-23+0100@Europe/Berlin"


def test_a_daylight_saving_day_is_23_or_25_hours_long() -> None:
    from router.ledger.windows import zone

    tz = zone(BERLIN)
    spring = window_span("daily", at(2026, 3, 29, 12), tz)
    autumn = window_span("daily", at(2026, 10, 25, 12), tz)
    assert spring.end_ms - spring.start_ms == 23 * 3_600_000
    assert autumn.end_ms - autumn.start_ms == 25 * 3_600_000


def test_the_repeated_autumn_hour_is_two_windows() -> None:
    from router.ledger.windows import zone

    tz = zone(BERLIN)
    first = window_span("hourly", at(2026, 10, 25, 0, 30), tz)
    second = window_span("hourly", at(2026, 10, 25, 1, 30), tz)
    assert first.label != second.label
    assert (first.end_ms - first.start_ms, second.end_ms - second.start_ms) == (3_600_000,) * 2
    assert first.end == second.start


def test_half_hour_zones_have_their_own_hours() -> None:
    from router.ledger.windows import zone

    span = window_span("hourly", at(2026, 11, 22, 10, 10), zone("Asia/Kolkata"))
    assert span.start.astimezone(UTC) == at(2026, 11, 22, 9, 30)


def test_weekly_and_monthly_follow_the_local_calendar() -> None:
    from router.ledger.windows import zone

    tz = zone("America/New_York")
    # Monday 2026-11-23 03:00 UTC is still Sunday evening in New York
    week = window_span("weekly", at(2026, 11, 23, 3), tz)
    assert week.start.date().isoformat() == "2026-11-16"
    month = window_span("monthly", at(2026, 12, 1, 2), tz)  # Nov 30 in New York
    assert (month.start.month, month.end.month) == (11, 12)


def test_unknown_zone_is_a_config_error() -> None:
    from router.ledger.windows import zone

    with pytest.raises(ConfigError, match="IANA"):
        zone("Nowhere/Special")


def test_every_moment_falls_in_exactly_one_window_across_dst() -> None:
    from router.ledger.windows import zone

    tz = zone(BERLIN)
    t = at(2026, 10, 24, 20)
    for window in WINDOWS:
        prev = None
        for minutes in range(0, 12 * 60, 7):
            now = t + timedelta(minutes=minutes)
            span = window_span(window, now, tz)
            assert span.start <= now < span.end
            if prev is not None and prev.label != span.label:
                assert prev.end == span.start
            prev = span

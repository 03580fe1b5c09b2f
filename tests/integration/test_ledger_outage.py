"""The ledger against real Redis servers: pacing λ, time zones, the refusal trail, failure
policies through a Redis outage, restart and script flush, Sentinel and Cluster URLs."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aredis
from prometheus_client import REGISTRY

from router.errors import BudgetExceeded, LedgerUnavailable
from router.ledger import RedisLedger
from router.ledger.keys import TenantKeys
from router.ledger.windows import window_span, zone
from tests.integration.fixtures.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

USD = 1_000_000
# 06:00 UTC: a quarter of the UTC day has passed
DAY_6AM = datetime(2026, 11, 22, 6, 0, tzinfo=UTC).timestamp()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_pacing_lambda_rises_ahead_of_pace_and_falls_behind(redis_url: str) -> None:
    tenant, caps = new_tenant(), {"daily": 100 * USD}
    clock = Clock(DAY_6AM)
    async with RedisLedger.from_url(redis_url, clock=clock) as led:
        assert (await led.state(tenant, caps)).pacing_lambda_per_usd == 0.0
        # a quarter of the day gone, a quarter of the cap spent: on pace, λ stays 0
        await led.reserve(tenant, "a", 25 * USD, caps, hold_ttl_s=60)
        await led.settle(tenant, "a", 24 * USD, {})
        assert (await led.state(tenant, caps)).pacing_lambda_per_usd == 0.0
        # then 40% more at once: well ahead of pace, λ rises, and keeps rising
        seen = []
        for i in range(4):
            await led.reserve(tenant, f"b{i}", 10 * USD, caps, hold_ttl_s=60)
            await led.settle(tenant, f"b{i}", 10 * USD, {})
            seen.append((await led.state(tenant, caps)).pacing_lambda_per_usd)
        assert 0 < seen[0] < seen[1] < seen[2] < seen[3]
        # late in the day the same spend is behind pace: λ falls back to 0
        clock.now = DAY_6AM + 17 * 3600
        falling = []
        for i in range(12):
            await led.reserve(tenant, f"c{i}", 1, caps, hold_ttl_s=60)
            await led.settle(tenant, f"c{i}", 1, {})
            falling.append((await led.state(tenant, caps)).pacing_lambda_per_usd)
        assert falling[0] < seen[-1]
        assert all(b <= a for a, b in itertools.pairwise(falling))
        assert falling[-1] == 0.0


async def test_lambda_is_shared_by_every_client(redis_url: str) -> None:
    tenant, caps = new_tenant(), {"hourly": 10 * USD}
    clock = Clock(DAY_6AM + 60)
    async with (
        RedisLedger.from_url(redis_url, clock=clock) as a,
        RedisLedger.from_url(redis_url, clock=clock) as b,
    ):
        await a.reserve(tenant, "r", 5 * USD, caps, hold_ttl_s=60)
        await a.settle(tenant, "r", 5 * USD, {})
        lam = (await b.state(tenant, caps)).pacing_lambda_per_usd
        assert lam > 0
        r = await b.reserve(tenant, "s", 1, caps, hold_ttl_s=60)
        assert r.held_micros == 1


async def test_windows_follow_the_tenant_zone(redis_url: str, raw: aredis.Redis) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD}
    # 23:30 UTC is already the next day in Berlin
    clock = Clock(datetime(2026, 11, 22, 23, 30, tzinfo=UTC).timestamp())
    async with RedisLedger.from_url(redis_url, clock=clock) as led:
        r = await led.reserve(tenant, "a", USD, caps, hold_ttl_s=60, tz="Europe/Berlin")
        await led.settle(tenant, "a", USD, {}, tz="Europe/Berlin")
        (w,) = r.windows
        assert w.reset_at.astimezone(UTC) == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
        now = datetime.fromtimestamp(clock.now, UTC)
        key = TenantKeys("ttc", tenant).spent(window_span("daily", now, zone("Europe/Berlin")))
        assert key.endswith(":spent:daily:2026-11-23+0100@Europe/Berlin")
        assert await raw.get(key) == str(USD)
        # the UTC tenant's day is another counter
        (utc,) = await led.windows(tenant, caps)
        assert utc.spent_micros == 0
        (berlin,) = await led.windows(tenant, caps, tz="Europe/Berlin")
        assert berlin.spent_micros == USD


async def test_every_refusal_is_recorded_with_the_state_that_caused_it(
    redis_url: str, raw: aredis.Redis
) -> None:
    tenant, caps = new_tenant(), {"hourly": 5 * USD, "daily": 100 * USD}
    before = metric("ttc_ledger_refusals_total")
    async with RedisLedger.from_url(redis_url) as led:
        await led.reserve(tenant, "a", 3 * USD, caps, hold_ttl_s=60)
        await led.settle(tenant, "a", 2 * USD, {})
        await led.reserve(tenant, "b", 2 * USD, caps, hold_ttl_s=60)
        with pytest.raises(BudgetExceeded, match=r"\$1.00 left"):
            await led.reserve(tenant, "c", 1_500_000, caps, hold_ttl_s=60)
    entries = await raw.xrange(TenantKeys("ttc", tenant).refusals)
    assert len(entries) == 1
    e = entries[0][1]
    assert (e["request_id"], e["window"], e["cap"]) == ("c", "hourly", str(5 * USD))
    assert (int(e["spent"]), int(e["held"]), int(e["micros"])) == (2 * USD, 2 * USD, 1_500_000)
    assert int(e["spent"]) + int(e["held"]) + int(e["micros"]) > int(e["cap"])
    assert metric("ttc_ledger_refusals_total") == before + 1


# --- outages ------------------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_fail_closed_refuses_while_redis_is_down_and_counts_it(
    private_redis: RedisServer,
) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD}
    async with RedisLedger.from_url(private_redis.url) as led:
        await led.reserve(tenant, "a", USD, caps, hold_ttl_s=60)
        private_redis.stop()
        before = metric(
            "ttc_ledger_unavailable_total",
            operation="reserve",
            policy="fail_closed",
            outcome="refused",
        )
        try:
            with pytest.raises(LedgerUnavailable):
                await led.reserve(tenant, "b", USD, caps, hold_ttl_s=60)
            assert (
                metric(
                    "ttc_ledger_unavailable_total",
                    operation="reserve",
                    policy="fail_closed",
                    outcome="refused",
                )
                == before + 1
            )
        finally:
            private_redis.start()
        r = await led.reserve(tenant, "b", USD, caps, hold_ttl_s=60)
        assert not r.replayed


async def test_fail_open_admits_within_the_allowance_and_reconciles_when_redis_returns(
    private_redis: RedisServer,
) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD}
    labels = {"operation": "reserve", "policy": "fail_open"}
    admitted0 = metric("ttc_ledger_unavailable_total", outcome="admitted_locally", **labels)
    refused0 = metric("ttc_ledger_unavailable_total", outcome="refused", **labels)
    reconciled0 = metric("ttc_ledger_reconciled_total")
    async with RedisLedger.from_url(private_redis.url) as led:
        led._retry_after_s = 0.0
        await led.reserve(tenant, "before", USD, caps, hold_ttl_s=60)
        private_redis.stop()
        try:
            # $1.5 of local allowance: one $1 request fits, a second does not
            r = await led.reserve(tenant, "x", USD, caps, hold_ttl_s=60, fail_open_micros=1_500_000)
            assert r.held_micros == USD
            with pytest.raises(LedgerUnavailable, match="allowance"):
                await led.reserve(tenant, "y", USD, caps, hold_ttl_s=60, fail_open_micros=1_500_000)
            await led.settle(tenant, "x", 400_000, {"arm": "small/greedy"})
            # the settled request gave back what it did not spend
            await led.reserve(tenant, "z", USD, caps, hold_ttl_s=60, fail_open_micros=1_500_000)
            await led.release(tenant, "z")
            # a Redis hold settled during the outage is kept too
            await led.settle(tenant, "before", 700_000, {})
            assert len(led.outage.pending) == 2
        finally:
            private_redis.start()
        assert metric("ttc_ledger_unavailable_total", outcome="admitted_locally", **labels) == (
            admitted0 + 2
        )
        assert metric("ttc_ledger_unavailable_total", outcome="refused", **labels) == refused0 + 1
        # Redis is back (empty: a new process): the next call writes what was kept
        state = await led.state(tenant, caps)
        assert led.outage.pending == []
        assert metric("ttc_ledger_reconciled_total") == reconciled0 + 2
        (w,) = state.windows
        assert (w.spent_micros, w.held_micros) == (1_100_000, 0)
        raw = aredis.from_url(private_redis.url, decode_responses=True)
        try:
            audit = await raw.xrange(TenantKeys("ttc", tenant).audit)
        finally:
            await raw.aclose()
        got = sorted((f["request_id"], f["micros"], f.get("late")) for _, f in audit)
        assert got == [("before", "700000", "1"), ("x", "400000", "1")]
        # written once: a second reconcile charges nothing more
        assert await led.reconcile() == 0
        (w,) = (await led.state(tenant, caps)).windows
        assert w.spent_micros == 1_100_000


async def test_restart_and_script_flush_keep_the_books(private_redis: RedisServer) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD}
    async with RedisLedger.from_url(private_redis.url) as led:
        raw = aredis.from_url(private_redis.url)
        try:
            results = await asyncio.gather(
                *(led.reserve(tenant, f"r{i}", USD, caps, hold_ttl_s=60) for i in range(5))
            )
            assert len(results) == 5
            await raw.script_flush()
            # concurrent calls share one pipeline; every one of them reloads fine
            await asyncio.gather(*(led.settle(tenant, f"r{i}", USD // 2, {}) for i in range(5)))
            (w,) = await led.windows(tenant, caps)
            assert (w.spent_micros, w.held_micros) == (5 * USD // 2, 0)
        finally:
            await raw.aclose()
        private_redis.stop()
        private_redis.start()
        # a fresh server: no data, no scripts; the ledger just works again
        r = await led.reserve(tenant, "after", USD, caps, hold_ttl_s=60)
        assert (r.held_micros, r.windows[0].spent_micros) == (USD, 0)


# --- Sentinel and Cluster -------------------------------------------------------------------


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def spawn_redis(
    args: list[str], workdir: Path, max_port: int = 65535
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``redis-server`` with ``args`` (``{port}`` filled in) on a free port.

    A port taken between choosing and binding makes the server exit; then another is tried.
    """
    exe = shutil.which("redis-server")
    assert exe is not None
    logs = []
    for attempt in range(3):
        port = free_port()
        while port > max_port:
            port = free_port()
        log = workdir / f"redis-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [exe, *(a.format(port=port) for a in args)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if _listening(port):
                return proc, port
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        logs.append(log.read_text(errors="replace")[-2000:])
    raise RuntimeError("redis-server did not start:\n" + "\n---\n".join(logs))


@pytest.fixture
def sentinel(private_redis: RedisServer, tmp_path: Path) -> Iterator[int]:
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"bind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor ledger 127.0.0.1 {private_redis.port} 1\n"
    )
    proc, port = spawn_redis([str(conf), "--sentinel", "--port", "{port}"], tmp_path)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_sentinel_url_reaches_the_master(sentinel: int) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD}
    url = f"redis+sentinel://127.0.0.1:{sentinel}/ledger"
    async with RedisLedger.from_url(url) as led:
        assert led.address == f"redis+sentinel://127.0.0.1:{sentinel}/ledger/0"
        await led.reserve(tenant, "a", USD, caps, hold_ttl_s=60)
        await led.settle(tenant, "a", USD // 4, {})
        (w,) = await led.windows(tenant, caps)
        assert (w.spent_micros, w.held_micros) == (USD // 4, 0)


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[int]:
    """A one-node Redis Cluster that owns all 16384 slots."""
    import redis

    proc, port = spawn_redis(
        [
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / "nodes-{port}.conf"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        tmp_path,
        max_port=65535 - 10000,  # the cluster bus listens on port + 10000
    )
    try:
        admin = redis.Redis(port=port)
        admin.execute_command("CLUSTER ADDSLOTS", *range(16384))
        deadline = time.monotonic() + 10
        while admin.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.05)
        admin.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_cluster_url_runs_every_script_in_the_tenant_slot(cluster_node: int) -> None:
    tenant, caps = new_tenant(), {"daily": 10 * USD, "monthly": 20 * USD}
    async with RedisLedger.from_url(f"redis+cluster://127.0.0.1:{cluster_node}") as led:
        await led.reserve(tenant, "a", 2 * USD, caps, hold_ttl_s=60)
        with pytest.raises(BudgetExceeded):
            await led.reserve(tenant, "b", 9 * USD, caps, hold_ttl_s=60)
        await led.settle(tenant, "a", USD, {"arm": "x/greedy"})
        await led.release(tenant, "a")
        state = await led.state(tenant, caps)
        assert [(w.spent_micros, w.held_micros) for w in state.windows] == [(USD, 0), (USD, 0)]


# --- the request flow through an outage, per tier policy ----------------------------------


async def test_each_tier_keeps_its_failure_policy_through_an_outage(
    private_redis: RedisServer,
) -> None:
    from router.config.backends import BackendsConfig
    from router.config.tenants import TenantConfig, hash_api_key
    from router.core.catalog import Catalog
    from router.core.service import GenerateResult, Hints, Tenant
    from tests.unit.fakes import BACKENDS, make_core

    doc = BACKENDS.model_dump()
    doc["tiers"]["small"]["failure_policy"] = "fail_open"
    doc["tiers"]["small"]["fail_open_allowance_usd"] = 0.01
    core = make_core()
    core.catalog = Catalog.build(BackendsConfig.model_validate(doc), core.predictor.arms)
    name = new_tenant()
    tenant = Tenant(name, TenantConfig(api_key_sha256=hash_api_key(name), daily_cap_usd=1.0))

    async def generate(arm: str) -> GenerateResult:
        last = None
        async for item in core.generate(tenant, "What is 17*23?", Hints(arms=(arm,))):
            last = item
        assert isinstance(last, GenerateResult)
        return last

    closed = {"operation": "reserve", "policy": "fail_closed", "outcome": "refused"}
    opened = {"operation": "reserve", "policy": "fail_open", "outcome": "admitted_locally"}
    async with RedisLedger.from_url(private_redis.url) as led:
        led._retry_after_s = 0.0
        core.ledger = led
        before = await generate("small/greedy")
        raw = aredis.from_url(private_redis.url)
        await raw.script_flush()  # a lost script cache changes nothing
        await raw.aclose()
        costs = [before.cost_micros, (await generate("big/greedy")).cost_micros]
        private_redis.stop()
        closed0 = metric("ttc_ledger_unavailable_total", **closed)
        opened0 = metric("ttc_ledger_unavailable_total", **opened)
        try:
            with pytest.raises(LedgerUnavailable):
                await generate("big/greedy")
            during = await generate("small/greedy")
            costs.append(during.cost_micros)
            assert metric("ttc_ledger_unavailable_total", **closed) == closed0 + 1
            assert metric("ttc_ledger_unavailable_total", **opened) == opened0 + 1
            assert len(led.outage.pending) == 1
        finally:
            private_redis.start()
        # Redis came back empty (a new process without persistence): only what was charged
        # during the outage is left to write, and it is written once
        (w,) = (await led.state(name, tenant.caps)).windows
        assert led.outage.pending == []
        assert (w.spent_micros, w.held_micros) == (costs[-1], 0)

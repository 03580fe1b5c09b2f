"""The outcome stream on a real Redis: records XADDed, drained into Parquet and read back
exactly once, also after a consumer dies between writing and acknowledging, and by the drain
task inside a real service."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router.api.app import serve_runtime
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc
from router.config.settings import Settings
from router.outcomes.logs import read_logs
from router.outcomes.parquet_sink import DrainTotals, ParquetDrain
from router.outcomes.redis_stream import RedisStreamOutcomeSink
from router.runtime import build_runtime
from tests.integration.fixtures.redis_server import free_port
from tests.integration.fixtures.service import TENANTS

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)


def decision(n: int) -> dict[str, Any]:
    ts = DAY0 + timedelta(minutes=37 * n)  # spreads records over several UTC days
    return {
        "prompt_id": f"p{n}",
        "prompt": f"What is {n}*7?",
        "arm": "local-7b/greedy",
        "score": None,
        "cost_usd": n / 1e6,
        "tenant": "alpha",
        "ts": ts.isoformat(),
        "decision_id": f"d{n:05d}",
        "samples": 1,
        "detail": {"n": n},
    }


def parquet_ids(directory: Path, kind: str = "decisions") -> Counter[str]:
    ids: Counter[str] = Counter()
    for part in (directory / kind).glob("day=*/part-*.parquet"):
        ids.update(pq.read_table(part, columns=["decision_id"]).column(0).to_pylist())
    return ids


async def drained(client: aioredis.Redis, stream: str, group: str = "ttc-sink") -> bool:
    """True when the group has read the stream's last entry and acknowledged everything."""
    info = await client.xinfo_stream(stream)
    for g in await client.xinfo_groups(stream):
        if g["name"] == group.encode():
            return bool(g["pending"] == 0 and g["last-delivered-id"] == info["last-generated-id"])
    return False


async def run_until_drained(
    drain: ParquetDrain, client: aioredis.Redis, timeout_s: float = 20.0
) -> DrainTotals:
    stop = asyncio.Event()
    task = asyncio.create_task(drain.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if await drained(client, drain.stream, drain.group):
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        totals = await task
    return totals


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def stream() -> str:
    return f"ttc:test-outcomes:{uuid.uuid4().hex}"


async def test_records_are_drained_once_and_read_back_with_their_scores(
    client: aioredis.Redis, stream: str, tmp_path: Path
) -> None:
    sink = RedisStreamOutcomeSink(client, outcomes_dir=tmp_path, stream=stream)
    for n in range(60):
        await sink.write_decision(decision(n))
    await sink.write_decision(decision(7))  # logged twice: kept once
    for n in range(0, 60, 3):
        await sink.write_score(f"d{n:05d}", "alpha", 0.5)
    await sink.write_score("d00003", "alpha", 1.0)  # the later score wins
    drain = ParquetDrain(client, tmp_path, stream=stream, consumer="one", batch=16, flush_s=0.2)
    totals = await run_until_drained(drain, client)
    assert (totals.written, totals.duplicates, totals.rejected) == (81, 1, 0)

    assert set(parquet_ids(tmp_path).values()) == {1}
    assert len(parquet_ids(tmp_path)) == 60
    days = sorted(p.name for p in (tmp_path / "decisions").iterdir())
    assert days[0] == "day=2026-03-04" and len(days) == 3
    records = read_logs(tmp_path)
    assert [r["decision_id"] for r in records] == [f"d{n:05d}" for n in range(60)]
    assert {k: records[5][k] for k in decision(5)} == decision(5)
    scores = {r["decision_id"]: r["score"] for r in records if r["score"] is not None}
    assert len(scores) == 20 and scores["d00003"] == 1.0 and scores["d00006"] == 0.5
    assert not (tmp_path / "spill").exists()


class NeverAcks(ParquetDrain):
    """A consumer that dies between writing its parts and acknowledging them."""

    async def _ack(self) -> None:
        return None


async def test_a_consumer_that_died_before_acking_is_resumed_or_claimed_without_duplicates(
    client: aioredis.Redis, stream: str, tmp_path: Path
) -> None:
    sink = RedisStreamOutcomeSink(client, outcomes_dir=tmp_path, stream=stream)
    for n in range(45):
        await sink.write_decision(decision(n))

    # "a" writes its first batch of 10 but acknowledges nothing, reads 10 more, and dies.
    a = NeverAcks(client, tmp_path, stream=stream, consumer="a", batch=10, claim_idle_s=0.3)
    await a.ensure_group()
    while a.buffered < 10:
        await a.read_once()
    assert (await a.flush()).written == 10
    while a.buffered < 10:
        await a.read_once()
    pending = await client.xpending(stream, "ttc-sink")
    assert pending["pending"] == 20

    # "a" restarted under its name takes back its own 20 entries first.
    a2 = ParquetDrain(client, tmp_path, stream=stream, consumer="a", batch=15, flush_s=0.2)
    while a2.buffered < 15:
        await a2.read_once()
    await a2.flush()  # 10 already written (skipped), 5 new
    assert a2.totals.duplicates == 10 and a2.totals.written == 5
    # ... and dies again holding the last 5 of them and 10 new ones.
    while a2.buffered < 15:
        await a2.read_once()

    # "b" claims what "a" held once it has been idle for claim_idle_s, and reads the rest.
    await asyncio.sleep(0.4)
    b = ParquetDrain(client, tmp_path, stream=stream, consumer="b", claim_idle_s=0.3, flush_s=0.2)
    totals = await run_until_drained(b, client)
    assert totals.written == 30 and totals.duplicates == 0

    ids = parquet_ids(tmp_path)
    assert sorted(ids) == [f"d{n:05d}" for n in range(45)]
    assert set(ids.values()) == {1}
    assert len(read_logs(tmp_path)) == 45
    assert (await client.xpending(stream, "ttc-sink"))["pending"] == 0


async def test_records_spill_to_a_local_file_when_redis_is_unreachable(tmp_path: Path) -> None:
    dead = aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        sink = RedisStreamOutcomeSink(dead, outcomes_dir=tmp_path, retry_after_s=60.0)
        await sink.write_decision(decision(1))
        await sink.write_score("d00001", "alpha", 1.0)
    finally:
        await dead.aclose()
    assert len(list((tmp_path / "spill").glob("decisions-2026-03-04.*.jsonl"))) == 1
    [rec] = read_logs(tmp_path)
    assert rec["decision_id"] == "d00001" and rec["score"] == 1.0


async def test_the_servers_drain_task_writes_parquet_and_stops_cleanly(
    service_settings: Settings, stream: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    settings = service_settings.model_copy(
        update={
            "listen": f"127.0.0.1:{free_port()}",
            "outcome_log": "redis",
            "outcome_drain": True,
            "outcome_stream": stream,
            "outcomes_dir": tmp_path / "outcomes",
        }
    )
    runtime = await build_runtime(settings)
    server = (await serve_runtime(runtime, settings)).server
    key = [("x-api-key", TENANTS["alpha"][0])]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
            ids = []
            for n in range(3):
                async for msg in stub.Generate(
                    pb.GenerateRequest(prompt=f"What is {n + 11}*3?"), metadata=key, timeout=30
                ):
                    if msg.HasField("final"):
                        ids.append(msg.final.decision.decision_id)
            await stub.RecordOutcome(
                pb.RecordOutcomeRequest(decision_id=ids[0], score=1.0), metadata=key
            )
    finally:
        await server.shutdown(1.0)
        await runtime.aclose()

    outcomes = tmp_path / "outcomes"
    assert sorted(parquet_ids(outcomes)) == sorted(ids)
    assert list(parquet_ids(outcomes, "scores")) == [ids[0]]
    assert not list(outcomes.glob("*.jsonl"))
    records = {r["decision_id"]: r for r in read_logs(outcomes)}
    assert records[ids[0]]["score"] == 1.0 and records[ids[1]]["tenant"] == "alpha"
    assert (await client.xpending(stream, "ttc-sink"))["pending"] == 0
    consumers = await client.xinfo_consumers(stream, "ttc-sink")
    assert [c["name"].decode() for c in consumers] == [f"{socket.gethostname()}-{os.getpid()}"]

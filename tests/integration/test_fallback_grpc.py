"""Tier fallback end to end: a real grpc.aio service whose ``local-7b`` tier points at a port
that refuses connections, with ``fallback: mid-32b``; real Redis ledger, real demo backends,
the real ``ResilientBackend`` built by the backend factory."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import yaml

from router.api.app import serve_runtime
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc
from router.backends.resilience import ResilientBackend
from router.config.backends import BackendsConfig, BreakerConfig, RetryConfig
from router.config.settings import Settings
from router.config.tenants import hash_api_key
from router.ledger.keys import TenantKeys
from router.ledger.redis_ledger import RedisLedger
from router.outcomes.jsonl_sink import read_outcomes
from router.runtime import build_runtime
from tests.integration.fixtures.service import Service, write_backends

pytestmark = pytest.mark.integration

TENANT, KEY = "fallback-tenant", "fallback-key"
METADATA = [("x-api-key", KEY)]
PROMPT = "What is 17*23?"


@pytest.fixture(scope="module")
def refused_endpoint() -> Iterator[str]:
    """``host:port`` of a bound socket that never listens: connecting is refused, and no
    other process can take the port while the tests run."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


def fallback_config(demo: BackendsConfig, endpoint: str) -> BackendsConfig:
    tiers = dict(demo.tiers)
    tiers["local-7b"] = tiers["local-7b"].model_copy(
        update={
            "endpoint": endpoint,
            "fallback": "mid-32b",
            "retry": RetryConfig(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05),
            # the first request's two failed attempts open the breaker
            "breaker": BreakerConfig(failure_threshold=2, open_s=300.0),
        }
    )
    return BackendsConfig(tiers=tiers, arms=demo.arms, strategy_options=demo.strategy_options)


def write_tenant(path: Path) -> Path:
    doc = {
        "tenants": {
            TENANT: {
                "api_key_sha256": hash_api_key(KEY),
                "daily_cap_usd": 10.0,
                "allowed_arms": ["*"],
                "lambda_per_usd": 50.0,
                "pacing": False,
                "exploration": 0.0,
            }
        }
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest_asyncio.fixture(scope="module")
async def fallback_service(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    demo_backends_config: BackendsConfig,
    refused_endpoint: str,
) -> AsyncIterator[Service]:
    work = tmp_path_factory.mktemp("fallback-service")
    settings = Settings(
        listen="127.0.0.1:0",
        redis_url=redis_url,
        backends_file=write_backends(
            fallback_config(demo_backends_config, refused_endpoint), work / "backends.yaml"
        ),
        tenants_file=write_tenant(work / "tenants.yaml"),
        cache_dir=tmp_path_factory.getbasetemp() / "cache",
        outcomes_dir=work / "outcomes",
        outcome_log="jsonl",
        max_concurrency=8,
        default_deadline_s=30.0,
    )
    runtime = await build_runtime(settings)
    serving = await serve_runtime(runtime, settings)
    servicer, server = serving.servicer, serving.server
    try:
        yield Service(runtime, server, settings, f"127.0.0.1:{server.port}", servicer)
    finally:
        await server.shutdown(1.0)
        await runtime.aclose()


@pytest_asyncio.fixture(scope="module")
async def fallback_stub(fallback_service: Service) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(fallback_service.address) as ch:
        yield router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]


async def generate(stub: Any, request_id: str) -> tuple[str, pb.GenerateFinal]:
    text = ""
    final = None
    call = stub.Generate(
        pb.GenerateRequest(
            prompt=PROMPT, hints=pb.Hints(arms=["local-7b/greedy"]), request_id=request_id
        ),
        metadata=METADATA,
        timeout=60,
    )
    async for msg in call:
        if msg.HasField("delta"):
            text += msg.delta
        else:
            final = msg.final
    assert final is not None
    return text, final


async def daily(stub: Any) -> pb.BudgetWindow:
    resp: pb.GetBudgetResponse = await stub.GetBudget(pb.GetBudgetRequest(), metadata=METADATA)
    [window] = resp.windows
    return window


async def ledger_record(service: Service, request_id: str) -> dict[str, str]:
    """The reservation record the Redis ledger keeps for ``request_id``."""
    ledger = service.runtime.core.ledger
    assert isinstance(ledger, RedisLedger)
    client = aioredis.Redis.from_url(service.runtime.redis_url, decode_responses=True)
    try:
        key = TenantKeys(ledger.key_prefix, TENANT).request(request_id)
        raw = await client.hgetall(key)
        return {str(k): str(v) for k, v in raw.items()}
    finally:
        await client.aclose()


def outcome(service: Service, decision_id: str) -> dict[str, Any]:
    records = [
        r for r in read_outcomes(service.settings.outcomes_dir) if r["decision_id"] == decision_id
    ]
    assert len(records) == 1
    return records[0]


async def test_a_refused_tier_is_answered_by_its_fallback(
    fallback_stub: Any, fallback_service: Service
) -> None:
    core = fallback_service.runtime.core
    local = core.backends["local-7b"]
    assert isinstance(local, ResilientBackend)
    before = await daily(fallback_stub)

    text, final = await generate(fallback_stub, "fb-1")

    d = final.decision
    assert d.fallback_from == "local-7b"
    assert d.arm == "mid-32b/greedy" and d.tier == "mid-32b" and d.strategy == "greedy"
    assert text == final.answer and "391" in final.answer
    assert local.retries == 1  # max_attempts 2: one retry, then BackendUnavailable
    # charged at mid-32b's price for the tokens mid-32b reported, within its own bound
    price = core.catalog.price_of("mid-32b")
    assert final.cost_micros == price.micros(final.usage.input_tokens, final.usage.output_tokens)
    assert 0 < final.cost_micros <= d.reserved_cost_micros

    after = await daily(fallback_stub)
    assert after.held_micros == 0
    assert after.spent_micros - before.spent_micros == final.cost_micros
    assert final.budget_remaining_micros == after.remaining_micros
    first, moved = (
        await ledger_record(fallback_service, "fb-1"),
        await ledger_record(fallback_service, "fb-1/fallback/mid-32b"),
    )
    assert first["state"] == "released"
    assert moved["state"] == "settled" and int(moved["actual"]) == final.cost_micros

    rec = outcome(fallback_service, d.decision_id)
    assert rec["arm"] == "mid-32b/greedy" and rec["tier"] == "mid-32b"
    assert rec["fallback_from"] == "local-7b"
    assert "local-7b" in rec["fallback_reason"] and "BackendUnavailable" in rec["fallback_reason"]
    assert rec["error"] is None and rec["request_id"] == "fb-1"
    assert rec["cost_usd"] == pytest.approx(final.cost_micros / 1e6)
    assert rec["output_tokens"] == final.usage.output_tokens and rec["samples"] == 1


async def test_with_the_breaker_open_the_fallback_is_immediate(
    fallback_stub: Any, fallback_service: Service
) -> None:
    local = fallback_service.runtime.core.backends["local-7b"]
    assert isinstance(local, ResilientBackend)
    if local.state == "closed":  # this test alone: let one request open the breaker
        await generate(fallback_stub, "fb-open")
    assert local.state == "open"
    retries = local.retries
    before = await daily(fallback_stub)

    _, final = await generate(fallback_stub, "fb-2")

    assert final.decision.fallback_from == "local-7b" and final.decision.tier == "mid-32b"
    assert local.retries == retries  # refused by the breaker, no call made
    after = await daily(fallback_stub)
    assert after.held_micros == 0
    assert after.spent_micros - before.spent_micros == final.cost_micros
    rec = outcome(fallback_service, final.decision.decision_id)
    assert "circuit open" in rec["fallback_reason"]
    health = await fallback_service.runtime.health()
    assert health["backend:local-7b"] is False and health["backend:mid-32b"] is True

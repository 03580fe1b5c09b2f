"""Backend faults through the gRPC API: each ends in a retry, a fallback or a clear error
as configured, with the budget hold released (or settled at what was really produced) and
one outcome record that names the failure. Real service, real Redis, real demo servers;
the faults are the demo servers' prompt markers (``router/backends/demo/answers.py``)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from router.backends.demo.launcher import OpenAIDemoServer
from router.config.backends import BackendsConfig, BreakerConfig, RetryConfig
from tests.integration.fixtures.custom_service import CustomService, custom_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST_RETRY = RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05)
# The faults here add up to more failed calls in a row than the default breaker allows;
# tripping it is test_fallback_grpc's subject, not this module's.
LENIENT = BreakerConfig(failure_threshold=100, open_s=1.0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def svc(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, demo_backends_config: BackendsConfig
) -> AsyncIterator[CustomService]:
    tiers = dict(demo_backends_config.tiers)
    tiers["local-7b"] = tiers["local-7b"].model_copy(
        update={
            "retry": FAST_RETRY.model_copy(update={"max_attempts": 2}),
            "fallback": "mid-32b",
            "breaker": LENIENT,
        }
    )
    tiers["mid-32b"] = tiers["mid-32b"].model_copy(
        update={"retry": FAST_RETRY, "breaker": LENIENT, "fallback": None}
    )
    tiers["premium"] = tiers["premium"].model_copy(
        update={"retry": FAST_RETRY, "breaker": LENIENT, "timeout_s": 1.0, "fallback": None}
    )
    cfg = BackendsConfig(tiers=tiers, arms=demo_backends_config.arms)
    work = tmp_path_factory.mktemp("faults") / "svc"
    async with custom_service(work, redis_url, cfg, tenant="faults") as s:
        yield s


def server_log(server: OpenAIDemoServer, prompt: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.endpoint}/demo/stats", timeout=5) as resp:
        return [r for r in json.load(resp)["recent"] if r["prompt"] == prompt]


async def failed_record(svc: CustomService, prompt: str) -> dict[str, Any]:
    """The outcome record of the failed request (written even when the client gave up)."""
    for _ in range(100):
        recs = [r for r in svc.records() if r["prompt"] == prompt]
        if recs:
            assert len(recs) == 1, recs
            return recs[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no outcome record for {prompt!r}")


async def test_a_flaky_tier_is_retried_and_charged_once(
    svc: CustomService, demo_openai: OpenAIDemoServer
) -> None:
    prompt = "What is 41*43? [demo-fault:flaky-2]"
    before, _ = await svc.budget_spent()
    _, final = await svc.generate(prompt, "mid-32b/greedy")
    assert "1763" in final.answer and final.decision.fallback_from == ""
    outcomes = [r["outcome"] for r in server_log(demo_openai, prompt)]
    assert outcomes == ["rejected", "rejected", "completed"]
    spent, held = await svc.budget_spent()
    assert spent - before == final.cost_micros > 0 and held == 0
    rec = await failed_record(svc, prompt)
    assert rec["error"] is None and rec["cost_usd"] == pytest.approx(final.cost_micros / 1e6)


async def test_http_500_is_retried_then_unavailable_with_nothing_charged(
    svc: CustomService, demo_openai: OpenAIDemoServer
) -> None:
    prompt = "What is 44*45? [demo-fault:http-500]"
    before, _ = await svc.budget_spent()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.generate(prompt, "mid-32b/greedy")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "mid-32b" in (err.value.details() or "") and "3 attempts" in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")
    assert [r["outcome"] for r in server_log(demo_openai, prompt)] == ["rejected"] * 3
    spent, held = await svc.budget_spent()
    assert spent == before and held == 0
    rec = await failed_record(svc, prompt)
    assert rec["error"].startswith("BackendUnavailable") and rec["cost_usd"] == 0


async def test_retries_used_up_on_triton_fall_back_to_the_next_tier(
    svc: CustomService, demo_openai: OpenAIDemoServer
) -> None:
    """local-7b (Triton) fails both attempts; mid-32b, its fallback, fails twice and answers
    on its third attempt. The charge is mid-32b's, and the record says why."""
    prompt = "What is 46*47? [demo-fault:flaky-2]"
    before, _ = await svc.budget_spent()
    _, final = await svc.generate(prompt, "local-7b/greedy")
    assert final.decision.fallback_from == "local-7b"
    assert final.decision.arm == "mid-32b/greedy" and "2162" in final.answer
    assert [r["outcome"] for r in server_log(demo_openai, prompt)] == [
        "rejected",
        "rejected",
        "completed",
    ]
    spent, held = await svc.budget_spent()
    assert spent - before == final.cost_micros and held == 0
    rec = await failed_record(svc, prompt)
    assert rec["tier"] == "mid-32b" and rec["fallback_from"] == "local-7b"
    assert rec["error"] is None and rec["fallback_reason"]


async def test_a_stream_slower_than_the_tier_timeout_is_a_clean_error(
    svc: CustomService,
) -> None:
    """premium has a 1 s timeout; the slow fault streams three tokens and then stalls. The
    request fails with UNAVAILABLE naming the timeout; the three tokens it did produce are
    charged at premium's output price and nothing stays held."""
    prompt = "What is 48*49? [demo-fault:slow]"
    before, _ = await svc.budget_spent()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.generate(prompt, "premium/greedy")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "premium" in (err.value.details() or "") and "1" in (err.value.details() or "")
    rec = await failed_record(svc, prompt)
    assert rec["error"].startswith("BackendTimeout")
    charge = svc.runtime.core.catalog.price_of("premium").micros(0, rec["partial_output_tokens"])
    spent, held = await svc.budget_spent()
    assert held == 0 and spent - before == charge
    assert rec["cost_usd"] == pytest.approx(charge / 1e6)


async def test_a_stream_slower_than_the_callers_deadline_is_deadline_exceeded(
    svc: CustomService,
) -> None:
    """mid-32b's own timeout is 30 s, the caller's deadline 1.5 s: the client gets
    DEADLINE_EXCEEDED, and the server still releases the hold and records the request."""
    prompt = "What is 51*52? [demo-fault:slow]"
    before, _ = await svc.budget_spent()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.generate(prompt, "mid-32b/greedy", deadline_s=1.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    rec = await failed_record(svc, prompt)
    assert rec["error"] is not None
    for _ in range(100):
        spent, held = await svc.budget_spent()
        if held == 0:
            break
        await asyncio.sleep(0.05)
    assert held == 0
    partial = rec.get("partial_output_tokens") or 0
    charge = svc.runtime.core.catalog.price_of("mid-32b").micros(0, partial) if partial else 0
    assert spent - before == charge

"""End to end through the generated client: real grpc.aio server, Redis, Triton, HTTP backends."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.server import start_server
from router.errors import ConfigError
from router.outcomes.jsonl_sink import read_outcomes
from tests.integration.fixtures.service import Service

pytestmark = pytest.mark.integration


async def generate(
    stub: Any, service: Service, tenant: str, prompt: str, **hints: Any
) -> tuple[str, pb.GenerateFinal]:
    text = ""
    final = None
    call = stub.Generate(
        pb.GenerateRequest(prompt=prompt, hints=pb.Hints(**hints)),
        metadata=service.key(tenant),
        timeout=60,
    )
    async for msg in call:
        if msg.HasField("delta"):
            text += msg.delta
        else:
            final = msg.final
    assert final is not None
    return text, final


async def budget(stub: Any, service: Service, tenant: str) -> pb.BudgetWindow:
    resp = await stub.GetBudget(pb.GetBudgetRequest(), metadata=service.key(tenant))
    assert resp.tenant == tenant
    [window] = resp.windows
    return window


def price_micros(service: Service, arm: str, usage: pb.Usage) -> int:
    spec = service.runtime.core.catalog.get(arm)
    return spec.tier.price.to_price().micros(usage.input_tokens, usage.output_tokens)


async def test_generate_streams_settles_and_logs(stub: Any, service: Service) -> None:
    before = await budget(stub, service, "alpha")
    text, final = await generate(stub, service, "alpha", "What is 17*23?")
    d = final.decision
    assert text == final.answer and "391" in final.answer
    assert d.arm in service.runtime.core.catalog.names
    assert d.tier == d.arm.split("/")[0] and d.strategy == "greedy"
    assert d.model_version == service.runtime.core.predictor.version
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    # the cost is what the backend's reported tokens cost, and it fits the reservation
    assert final.cost_micros == price_micros(service, d.arm, final.usage)
    assert 0 < final.cost_micros <= d.reserved_cost_micros
    after = await budget(stub, service, "alpha")
    assert after.spent_micros - before.spent_micros == final.cost_micros
    assert after.held_micros == 0
    assert final.budget_remaining_micros == after.remaining_micros
    records = [
        r for r in read_outcomes(service.settings.outcomes_dir) if r["decision_id"] == d.decision_id
    ]
    assert len(records) == 1
    rec = records[0]
    assert rec["arm"] == d.arm and rec["tenant"] == "alpha" and rec["error"] is None
    assert rec["cost_usd"] == pytest.approx(final.cost_micros / 1e6)
    assert rec["output_tokens"] == final.usage.output_tokens and rec["propensity"] == 1.0
    m = service.servicer.metrics
    assert m.decisions.labels(d.arm)._value.get() >= 1
    assert m.cost_micros.labels(d.arm)._value.get() >= final.cost_micros
    assert m.calls.labels("Generate", "OK")._value.get() >= 1


async def test_each_tier_answers_through_its_protocol(stub: Any, service: Service) -> None:
    for arm in service.runtime.core.catalog.names:
        text, final = await generate(stub, service, "alpha", "What is 12+30?", arms=[arm])
        assert final.decision.arm == arm
        assert text == final.answer and final.answer.strip()
        assert final.cost_micros == price_micros(service, arm, final.usage)


async def test_route_decides_without_spending(stub: Any, service: Service) -> None:
    before = await budget(stub, service, "alpha")
    resp = await stub.Route(
        pb.RouteRequest(prompt="Prove that there are infinitely many primes."),
        metadata=service.key("alpha"),
    )
    d = resp.decision
    assert not resp.reserved
    assert {c.arm for c in d.candidates} == set(service.runtime.core.catalog.names)
    assert all(0.0 <= c.p_success <= 1.0 for c in d.candidates)
    assert (await budget(stub, service, "alpha")).spent_micros == before.spent_micros
    reserved = await stub.Route(
        pb.RouteRequest(prompt="hello", reserve=True, request_id="route-reserve-1"),
        metadata=service.key("alpha"),
    )
    assert reserved.reserved
    held = (await budget(stub, service, "alpha")).held_micros
    assert held == reserved.decision.reserved_cost_micros
    await service.runtime.core.ledger.release("alpha", "route-reserve-1")


async def test_two_tenants_concurrently_have_separate_budgets(stub: Any, service: Service) -> None:
    a0, b0 = await budget(stub, service, "alpha"), await budget(stub, service, "beta")
    results = await asyncio.gather(
        *[
            generate(stub, service, t, f"What is {i}*7?")
            for i in range(4)
            for t in ("alpha", "beta")
        ]
    )
    spent = {"alpha": 0, "beta": 0}
    for i, (_, final) in enumerate(results):
        spent["alpha" if i % 2 == 0 else "beta"] += final.cost_micros
    a1, b1 = await budget(stub, service, "alpha"), await budget(stub, service, "beta")
    assert a1.spent_micros - a0.spent_micros == spent["alpha"]
    assert b1.spent_micros - b0.spent_micros == spent["beta"]
    assert a1.held_micros == b1.held_micros == 0


async def test_tenant_hitting_its_cap_is_refused_and_never_overspends(
    stub: Any, service: Service
) -> None:
    refusal = None
    for i in range(200):
        try:
            await generate(stub, service, "poor", f"Write a short poem about the number {i}.")
        except grpc.aio.AioRpcError as err:
            refusal = err
            break
    assert refusal is not None, "the poor tenant was never refused"
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "left" in (refusal.details() or "")
    status_bin = dict(refusal.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(status_bin)
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject.startswith("tenant:poor")
    w = await budget(stub, service, "poor")
    assert w.spent_micros <= w.cap_micros and w.held_micros == 0
    # a refused request charged nothing
    again = None
    try:
        await generate(stub, service, "poor", "Write a short poem about the sea.")
    except grpc.aio.AioRpcError as err:
        again = err
    assert again is not None and again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await budget(stub, service, "poor")).spent_micros == w.spent_micros


async def test_backend_failing_mid_stream_releases_hold_and_records_it(
    stub: Any, service: Service
) -> None:
    arm = next(a for a in service.runtime.core.catalog.names if a.startswith("mid-32b/"))
    before = await budget(stub, service, "beta")
    deltas: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        call = stub.Generate(
            pb.GenerateRequest(
                prompt="Explain photosynthesis. [demo-fault:mid-stream]", hints=pb.Hints(arms=[arm])
            ),
            metadata=service.key("beta"),
            timeout=30,
        )
        async for msg in call:
            deltas.append(msg.delta)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in (info.value.details() or "")
    assert deltas, "some tokens streamed before the fault"
    after = await budget(stub, service, "beta")
    failed = [
        r
        for r in read_outcomes(service.settings.outcomes_dir)
        if r["tenant"] == "beta" and r["error"] and "BackendError" in r["error"]
    ]
    assert failed and failed[-1]["arm"] == arm
    # The output tokens produced before the fault are real spend, charged at the tier's price.
    tokens = failed[-1]["partial_output_tokens"]
    charge = service.runtime.core.catalog.price_of("mid-32b").micros(0, tokens)
    assert tokens > 0 and failed[-1]["cost_usd"] == pytest.approx(charge / 1e6)
    assert after.held_micros == 0 and after.spent_micros - before.spent_micros == charge


async def test_record_outcome_attaches_score(stub: Any, service: Service) -> None:
    _, final = await generate(stub, service, "alpha", "What is 2+2?")
    did = final.decision.decision_id
    await stub.RecordOutcome(
        pb.RecordOutcomeRequest(decision_id=did, score=1.0), metadata=service.key("alpha")
    )
    scored = [r for r in read_outcomes(service.settings.outcomes_dir, scored_only=True)]
    assert any(r["decision_id"] == did and r["score"] == 1.0 for r in scored)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordOutcome(
            pb.RecordOutcomeRequest(decision_id=did, score=1.0), metadata=service.key("beta")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.RecordOutcome(
            pb.RecordOutcomeRequest(decision_id="nope", score=1.0), metadata=service.key("alpha")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


BAD_INPUT = [
    (
        "empty prompt",
        "alpha",
        pb.GenerateRequest(prompt=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "prompt is empty",
    ),
    (
        "oversized prompt",
        "alpha",
        pb.GenerateRequest(prompt="x" * 40_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "TTC_MAX_PROMPT_CHARS",
    ),
    (
        "unknown arm",
        "alpha",
        pb.GenerateRequest(prompt="hi", hints=pb.Hints(arms=["x/greedy"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not offered",
    ),
    (
        "arm not allowed",
        "narrow",
        pb.GenerateRequest(prompt="hi", hints=pb.Hints(arms=["premium/greedy"])),
        grpc.StatusCode.PERMISSION_DENIED,
        "may not use",
    ),
    (
        "bad min_quality",
        "alpha",
        pb.GenerateRequest(prompt="hi", hints=pb.Hints(min_quality=2)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_quality",
    ),
    (
        "impossible hints",
        "alpha",
        pb.GenerateRequest(prompt="hi", hints=pb.Hints(min_quality=0.999999)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "min_quality",
    ),
]


@pytest.mark.parametrize(
    ("case", "tenant", "request_msg", "code", "words"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
async def test_bad_input_gets_clear_status_and_costs_nothing(
    stub: Any,
    service: Service,
    case: str,
    tenant: str,
    request_msg: pb.GenerateRequest,
    code: grpc.StatusCode,
    words: str,
) -> None:
    before = await budget(stub, service, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(request_msg, metadata=service.key(tenant), timeout=30):
            pass
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or "")
    assert service.servicer.metrics.calls.labels("Generate", code.name)._value.get() >= 1
    after = await budget(stub, service, tenant)
    assert (after.spent_micros, after.held_micros) == (before.spent_micros, before.held_micros)


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ([], "no API key"),
        ([("x-api-key", "wrong")], "matches no tenant"),
        ([("authorization", "Bearer wrong")], "matches no tenant"),
    ],
)
async def test_authentication(stub: Any, metadata: list[tuple[str, str]], words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetBudget(pb.GetBudgetRequest(), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert words in (info.value.details() or "")


async def test_bearer_token_works(stub: Any) -> None:
    resp = await stub.GetBudget(
        pb.GetBudgetRequest(), metadata=[("authorization", "Bearer alpha-key")]
    )
    assert resp.tenant == "alpha"


async def test_invalid_utf8_is_invalid_argument(
    channel: grpc.aio.Channel, service: Service
) -> None:
    # field 1 (prompt), length 2, bytes that are not UTF-8
    raw = b"\x0a\x02\xff\xfe"
    call = channel.unary_stream(
        "/ttc_router.v1.Router/Generate",
        request_serializer=lambda b: b,
        response_deserializer=pb.GenerateResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call(raw, metadata=service.key("alpha"), timeout=10):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (info.value.details() or "")


async def test_overload_is_resource_exhausted_at_once(stub: Any, service: Service) -> None:
    servicer_limit = service.settings.max_concurrency
    prompts = [f"Write an essay about topic {i}." for i in range(servicer_limit * 3)]
    results = await asyncio.gather(
        *[generate(stub, service, "alpha", p, arms=["local-7b/greedy"]) for p in prompts],
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert ok, "some requests must succeed"
    assert refused, "more calls than the limit at once must see some refused"
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert all("limit" in (r.details() or "") for r in refused)
    assert (await budget(stub, service, "alpha")).held_micros == 0


async def test_health_per_component_and_reflection(
    channel: grpc.aio.Channel, service: Service
) -> None:
    health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    names = ["", "ttc_router.v1.Router", "config", "redis", "predictor"] + [
        f"backend:{t}" for t in service.runtime.core.backends
    ]
    for name in names:
        resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, name
    call = health.Check(health_pb2.HealthCheckRequest(service=""))
    await call
    metadata = dict(await call.initial_metadata())
    assert metadata["ttc-model-version"] == service.runtime.core.predictor.version
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[no-untyped-call]

    async def one() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for resp in refl.ServerReflectionInfo(one()):
        services = {s.name for s in resp.list_services_response.service}
        assert {"ttc_router.v1.Router", "grpc.health.v1.Health"} <= services
        break


async def test_long_prompts_sharing_a_prefix_are_told_apart(service: Service) -> None:
    prefix = "".join(f"Example {i}: {i} + {i} = {2 * i}.\n" for i in range(200))
    embed = service.runtime.core.embedder.embed
    a = await embed(prefix + "Question: what is 17*23?")
    b = await embed(prefix + "Question: write a sonnet about the sea in the style of Keats.")
    same = await embed(prefix + "Question: what is 17*23?")
    assert float(np.dot(a, same)) > 0.9999
    # with only the first 256 tokens embedded the two would be identical
    assert float(np.dot(a, b)) < 0.95


async def test_listening_on_a_busy_address_is_a_config_error(service: Service) -> None:
    with pytest.raises(ConfigError, match="TTC_LISTEN"):
        await start_server(
            service.servicer,
            service.address,  # the session's server holds it
            service.runtime.health,
            model_version=lambda: "unused",
        )


async def test_a_reused_request_id_is_already_exists(stub: Any, service: Service) -> None:
    req = pb.GenerateRequest(prompt="What is 3*3?", request_id="grpc-reuse-1")
    async for _ in stub.Generate(req, metadata=service.key("alpha"), timeout=30):
        pass
    before = await budget(stub, service, "alpha")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(req, metadata=service.key("alpha"), timeout=30):
            pass
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "grpc-reuse-1" in (info.value.details() or "")
    after = await budget(stub, service, "alpha")
    assert (after.spent_micros, after.held_micros) == (before.spent_micros, before.held_micros)

"""OpenAICompatibleBackend against the demo OpenAI-compatible server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    simulate,
)
from router.backends.demo.launcher import OpenAIDemoServer, free_port
from router.backends.demo.openai_server import start_demo_openai_server
from router.backends.factory import build_backend
from router.backends.openai_compatible import OpenAICompatibleBackend
from router.config.backends import PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError, BackendTimeout
from tests.integration.backend_contract import (
    check_consumer_stopping_early,
    check_max_concurrency,
    collect,
)

pytestmark = pytest.mark.integration

MID = DEMO_OPENAI_MODELS["demo-32b"]
LONG_PROMPT = "Explain how a write-ahead log keeps a database consistent after a crash."


def tier_config(endpoint: str, model: str = MID.name, **extra: object) -> TierConfig:
    fields: dict[str, object] = {
        "protocol": "openai",
        "endpoint": endpoint,
        "model": model,
        "price": PriceConfig(input_per_mtok=0.40, output_per_mtok=0.80),
        "timeout_s": 20.0,
    }
    fields.update(extra)
    return TierConfig.model_validate(fields)


@pytest.fixture
async def backend(demo_openai: OpenAIDemoServer) -> AsyncIterator[OpenAICompatibleBackend]:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint))
    yield b
    await b.aclose()


async def reported_usage(endpoint: str, model: str, prompt: str, max_tokens: int) -> dict[str, int]:
    """What the server itself reports for the same request, asked without streaming."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{endpoint}/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            },
        )
    response.raise_for_status()
    usage: dict[str, int] = response.json()["usage"]
    return usage


async def test_streams_a_greedy_answer(
    backend: OpenAICompatibleBackend, demo_openai: OpenAIDemoServer
) -> None:
    prompt = "What is 17*23?"
    expected = simulate(prompt, skill=MID.skill)

    deltas, result = await collect(backend, SampleRequest(prompt, max_tokens=200))

    assert "".join(deltas) == result.text == expected.text
    assert result.text.endswith("391")
    usage = await reported_usage(demo_openai.endpoint, MID.name, prompt, 200)
    assert result.input_tokens == usage["prompt_tokens"]
    assert result.output_tokens == usage["completion_tokens"] == len(expected.tokens)
    assert result.finish_reason == "stop"


async def test_max_tokens_is_honoured(backend: OpenAICompatibleBackend) -> None:
    expected = simulate(LONG_PROMPT, skill=MID.skill)
    assert len(expected.tokens) > 9

    deltas, result = await collect(backend, SampleRequest(LONG_PROMPT, max_tokens=9))

    assert result.output_tokens == 9 == len(deltas)
    assert result.text == "".join(expected.tokens[:9])
    assert result.finish_reason == "length"


async def test_seed_and_temperature_reach_the_model(backend: OpenAICompatibleBackend) -> None:
    n = 40
    a = simulate(LONG_PROMPT, skill=MID.skill, seed=5, temperature=0.9).tokens[:n]
    b = simulate(LONG_PROMPT, skill=MID.skill, seed=6, temperature=0.9).tokens[:n]
    assert a != b

    _, first = await collect(backend, SampleRequest(LONG_PROMPT, n, temperature=0.9, seed=5))
    _, second = await collect(backend, SampleRequest(LONG_PROMPT, n, temperature=0.9, seed=6))

    assert (first.text, second.text) == ("".join(a), "".join(b))


async def test_endpoint_may_end_in_v1(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(f"{demo_openai.endpoint}/v1/"))
    try:
        assert await b.ready() is True
        _, result = await collect(b, SampleRequest("What is 2+2?", max_tokens=50))
    finally:
        await b.aclose()
    assert result.text.endswith("4")


async def test_deadline_raises_backend_timeout(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("slow", tier_config(demo_openai.endpoint, model="demo-slow"))
    started = time.monotonic()
    try:
        with pytest.raises(BackendTimeout, match="slow"):
            await collect(b, SampleRequest(LONG_PROMPT, max_tokens=100, timeout_s=0.3))
        assert b.limits.in_use == 0
    finally:
        await b.aclose()
    assert time.monotonic() - started < 1.5


async def test_tier_timeout_bounds_the_call(demo_openai: OpenAIDemoServer) -> None:
    cfg = tier_config(demo_openai.endpoint, model="demo-slow", timeout_s=0.3)
    b = OpenAICompatibleBackend("slow", cfg)
    try:
        with pytest.raises(BackendTimeout):
            await collect(b, SampleRequest(LONG_PROMPT, max_tokens=100, timeout_s=30.0))
    finally:
        await b.aclose()


async def test_unknown_model_is_a_backend_error(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, model="no-such"))
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="HTTP 404") as info:
            await collect(b, SampleRequest("hello", max_tokens=5))
        assert "mid-32b" in info.value.message
    finally:
        await b.aclose()


async def test_http_503_is_a_backend_error(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, model="demo-broken"))
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="HTTP 503") as info:
            await collect(b, SampleRequest("hello", max_tokens=5))
        assert not isinstance(info.value, BackendTimeout)
        assert "unavailable" in info.value.message
        assert b.limits.in_use == 0
    finally:
        await b.aclose()


async def test_connection_refused_is_a_backend_error() -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(f"http://127.0.0.1:{free_port()}"))
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="cannot connect") as info:
            await collect(b, SampleRequest("hello", max_tokens=5))
        assert not isinstance(info.value, BackendTimeout)
    finally:
        await b.aclose()


@pytest.mark.parametrize("how", ["model", "prompt"])
async def test_disconnect_mid_stream_is_a_backend_error(
    demo_openai: OpenAIDemoServer, how: str
) -> None:
    model, prompt = (
        ("demo-disconnect", LONG_PROMPT)
        if how == "model"
        else (MID.name, f"{LONG_PROMPT} {FAULT_MID_STREAM}")
    )
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, model=model))
    deltas: list[str] = []
    try:
        with pytest.raises(BackendError, match="mid-stream") as info:
            async for item in b.stream(SampleRequest(prompt, max_tokens=200)):
                assert isinstance(item, TextDelta)
                deltas.append(item.text)
        assert not isinstance(info.value, BackendTimeout)
        assert b.limits.in_use == 0
    finally:
        await b.aclose()
    assert len(deltas) == FAULT_AFTER_TOKENS


async def test_missing_usage_falls_back_to_an_estimate(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, model="demo-no-usage"))
    try:
        _, result = await collect(b, SampleRequest(LONG_PROMPT, max_tokens=40))
    finally:
        await b.aclose()
    assert result.output_tokens == math.ceil(len(result.text) / 4)
    assert result.input_tokens == math.ceil(len(LONG_PROMPT) / 4)


async def test_consumer_stopping_early_does_not_hang(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, max_concurrency=1))
    try:
        await check_consumer_stopping_early(b, LONG_PROMPT)
    finally:
        await b.aclose()


async def test_max_concurrency_is_respected(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, max_concurrency=2))
    try:
        await check_max_concurrency(b, 2, [(a, a + 2) for a in range(21, 26)])
    finally:
        await b.aclose()


async def test_bearer_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "demo-secret-key-123"
    port = free_port()
    runner = await start_demo_openai_server("127.0.0.1", port, api_key=secret)
    endpoint = f"http://127.0.0.1:{port}"
    cfg = tier_config(endpoint, api_key_env="TTC_TEST_DEMO_KEY")
    b = OpenAICompatibleBackend("mid-32b", cfg)
    try:
        monkeypatch.delenv("TTC_TEST_DEMO_KEY", raising=False)
        with pytest.raises(BackendError, match="TTC_TEST_DEMO_KEY"):
            await collect(b, SampleRequest("What is 1+1?", max_tokens=20))

        monkeypatch.setenv("TTC_TEST_DEMO_KEY", "wrong-key")
        assert await b.ready() is False
        with pytest.raises(BackendError, match="HTTP 401") as info:
            await collect(b, SampleRequest("What is 1+1?", max_tokens=20))
        assert "wrong-key" not in info.value.message

        monkeypatch.setenv("TTC_TEST_DEMO_KEY", secret)
        assert await b.ready() is True
        _, result = await collect(b, SampleRequest("What is 1+1?", max_tokens=20))
        assert result.text.endswith("2")
    finally:
        await b.aclose()
        await runner.cleanup()


async def test_shared_client_is_used_and_left_open(demo_openai: OpenAIDemoServer) -> None:
    async with httpx.AsyncClient() as client:
        b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint), client=client)
        _, result = await collect(b, SampleRequest("What is 3*3?", max_tokens=30))
        await b.aclose()
        assert not client.is_closed
    assert result.text.endswith("9")


async def test_factory_builds_the_openai_adapter(demo_openai: OpenAIDemoServer) -> None:
    b = build_backend("premium", tier_config(demo_openai.endpoint, model="demo-premium"))
    try:
        assert isinstance(b, OpenAICompatibleBackend)
        assert b.tier == "premium"
        assert await b.ready() is True
    finally:
        await b.aclose()

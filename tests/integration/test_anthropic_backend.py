"""AnthropicBackend against the demo Anthropic Messages API server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.backends.anthropic import AnthropicBackend
from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    FAULT_UNAVAILABLE,
    simulate,
)
from router.backends.demo.launcher import AnthropicDemoServer, free_port
from router.backends.factory import build_backend
from router.backends.resilience import ResilientBackend
from router.config.backends import PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError, BackendTimeout, ConfigError
from tests.integration.backend_contract import (
    check_consumer_stopping_early,
    check_max_concurrency,
    collect,
)

pytestmark = pytest.mark.integration

PREMIUM = DEMO_OPENAI_MODELS["demo-premium"]
KEY_ENV = "TTC_TEST_ANTHROPIC_KEY"
KEY = "test-anthropic-key-5f2c"
LONG_PROMPT = "Explain how a write-ahead log keeps a database consistent after a crash."


@pytest.fixture(scope="module")
def anthropic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnthropicDemoServer]:
    """The demo Anthropic server as a child process, requiring the key held by ``KEY_ENV``."""
    os.environ[KEY_ENV] = KEY
    server = AnthropicDemoServer(tmp_path_factory.mktemp("demo-anthropic"), api_key_env=KEY_ENV)
    try:
        server.wait_ready(timeout_s=30.0)
        yield server
    finally:
        server.stop()
        os.environ.pop(KEY_ENV, None)


def tier_config(endpoint: str, model: str = PREMIUM.name, **extra: object) -> TierConfig:
    fields: dict[str, object] = {
        "protocol": "anthropic",
        "endpoint": endpoint,
        "model": model,
        "api_key_env": KEY_ENV,
        "price": PriceConfig(input_per_mtok=3.0, output_per_mtok=15.0),
        "timeout_s": 20.0,
    }
    fields.update(extra)
    return TierConfig.model_validate(fields)


@pytest.fixture
async def backend(anthropic_server: AnthropicDemoServer) -> AsyncIterator[AnthropicBackend]:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint))
    yield b
    await b.aclose()


async def reported(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's own non-streamed answer to the same request."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{endpoint}/v1/messages",
            json={"model": PREMIUM.name, "temperature": 0.0, **body},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
    response.raise_for_status()
    message: dict[str, Any] = response.json()
    return message


async def test_streams_a_greedy_answer_with_the_servers_usage(
    backend: AnthropicBackend, anthropic_server: AnthropicDemoServer
) -> None:
    prompt = "What is 17*23?"
    expected = simulate(prompt, skill=PREMIUM.skill)

    deltas, result = await collect(backend, SampleRequest(prompt, max_tokens=200))

    assert "".join(deltas) == result.text == expected.text
    assert result.text.endswith("391")
    message = await reported(
        anthropic_server.endpoint,
        {"max_tokens": 200, "messages": [{"role": "user", "content": prompt}]},
    )
    assert message["content"][0]["text"] == result.text
    assert result.input_tokens == message["usage"]["input_tokens"]
    assert result.output_tokens == message["usage"]["output_tokens"] == len(expected.tokens)
    assert result.finish_reason == "stop"
    assert result.usage_estimated is False


async def test_max_tokens_is_honoured(backend: AnthropicBackend) -> None:
    expected = simulate(LONG_PROMPT, skill=PREMIUM.skill)
    assert len(expected.tokens) > 9

    deltas, result = await collect(backend, SampleRequest(LONG_PROMPT, max_tokens=9))

    assert result.output_tokens == 9 == len(deltas)
    assert result.text == "".join(expected.tokens[:9])
    assert result.finish_reason == "length"


async def test_stop_sequences_end_the_answer_before_them(
    backend: AnthropicBackend, anthropic_server: AnthropicDemoServer
) -> None:
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=PREMIUM.skill).text
    cut = full.index("Answer:")

    _, result = await collect(
        backend, SampleRequest(prompt, max_tokens=200, stop=("Answer:", "no such text"))
    )

    assert result.text == full[:cut]
    assert result.finish_reason == "stop"
    message = await reported(
        anthropic_server.endpoint,
        {
            "max_tokens": 200,
            "messages": [{"role": "user", "content": prompt}],
            "stop_sequences": ["Answer:", "no such text"],
        },
    )
    assert message["stop_reason"] == "stop_sequence"
    assert message["stop_sequence"] == "Answer:"
    assert result.output_tokens == message["usage"]["output_tokens"]


async def test_continuation_is_sent_as_a_prefill_and_not_repeated(
    backend: AnthropicBackend,
) -> None:
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=PREMIUM.skill).text
    # ends in a space, which the API refuses in a prefill: the adapter must cope
    continuation = full[: full.index("=") + 2]
    assert continuation.endswith(" ")

    _, plain = await collect(backend, SampleRequest(prompt, max_tokens=200))
    deltas, result = await collect(
        backend, SampleRequest(prompt, max_tokens=200, continuation=continuation)
    )

    assert continuation + result.text == full
    assert "".join(deltas) == result.text
    assert result.output_tokens < plain.output_tokens
    assert result.input_tokens > plain.input_tokens


async def test_unavailable_is_a_retriable_529(backend: AnthropicBackend) -> None:
    with pytest.raises(BackendError, match="HTTP 529") as info:
        await collect(backend, SampleRequest(f"hello {FAULT_UNAVAILABLE}", max_tokens=5))
    assert info.value.retriable is True
    assert "overloaded" in info.value.message
    assert backend.limits.in_use == 0


@pytest.mark.parametrize(
    ("status", "retriable", "kind"),
    [
        (429, True, "rate_limit_error"),
        (500, True, "api_error"),
        (400, False, "invalid_request_error"),
        (404, False, "not_found_error"),
    ],
)
async def test_http_errors_carry_the_apis_message(
    backend: AnthropicBackend, status: int, retriable: bool, kind: str
) -> None:
    with pytest.raises(BackendError) as info:
        await collect(backend, SampleRequest(f"hi [demo-fault:http-{status}]", max_tokens=5))
    assert not isinstance(info.value, BackendTimeout)
    assert info.value.retriable is retriable
    assert f"HTTP {status} ({kind})" in info.value.message
    assert f"simulated HTTP {status}" in info.value.message


async def test_error_event_mid_stream_reports_partial_tokens(backend: AnthropicBackend) -> None:
    deltas: list[str] = []
    with pytest.raises(BackendError, match="overloaded_error") as info:
        async for item in backend.stream(
            SampleRequest(f"{LONG_PROMPT} {FAULT_MID_STREAM}", max_tokens=200)
        ):
            assert isinstance(item, TextDelta)
            deltas.append(item.text)
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert info.value.partial_output_tokens == FAULT_AFTER_TOKENS
    assert info.value.retriable is False
    assert backend.limits.in_use == 0


async def test_dropped_connection_mid_stream_reports_partial_tokens(
    anthropic_server: AnthropicDemoServer,
) -> None:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint, model="demo-disconnect"))
    deltas: list[str] = []
    try:
        with pytest.raises(BackendError, match=r"mid-stream|ended before") as info:
            async for item in b.stream(SampleRequest(LONG_PROMPT, max_tokens=200)):
                assert isinstance(item, TextDelta)
                deltas.append(item.text)
    finally:
        await b.aclose()
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert info.value.partial_output_tokens == FAULT_AFTER_TOKENS


async def test_connection_refused_is_retriable() -> None:
    b = AnthropicBackend("premium", tier_config(f"http://127.0.0.1:{free_port()}"))
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="cannot connect") as info:
            await collect(b, SampleRequest("hello", max_tokens=5))
    finally:
        await b.aclose()
    assert info.value.retriable is True


async def test_deadline_raises_backend_timeout(anthropic_server: AnthropicDemoServer) -> None:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint, model="demo-slow"))
    try:
        with pytest.raises(BackendTimeout):
            await collect(b, SampleRequest(LONG_PROMPT, max_tokens=100, timeout_s=0.3))
        assert b.limits.in_use == 0
    finally:
        await b.aclose()


async def test_ready_probes_the_model(anthropic_server: AnthropicDemoServer) -> None:
    good = AnthropicBackend("premium", tier_config(anthropic_server.endpoint))
    broken = AnthropicBackend(
        "premium", tier_config(anthropic_server.endpoint, model="demo-broken")
    )
    try:
        assert await good.ready() is True
        assert await broken.ready() is False
    finally:
        await good.aclose()
        await broken.aclose()


async def test_key_comes_from_the_named_variable(
    anthropic_server: AnthropicDemoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TTC_TEST_ANTHROPIC_OTHER_KEY", raising=False)
    with pytest.raises(ConfigError, match="TTC_TEST_ANTHROPIC_OTHER_KEY"):
        AnthropicBackend(
            "premium",
            tier_config(anthropic_server.endpoint, api_key_env="TTC_TEST_ANTHROPIC_OTHER_KEY"),
        )

    monkeypatch.setenv("TTC_TEST_ANTHROPIC_OTHER_KEY", "wrong-key")
    b = AnthropicBackend(
        "premium",
        tier_config(anthropic_server.endpoint, api_key_env="TTC_TEST_ANTHROPIC_OTHER_KEY"),
    )
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="HTTP 401") as info:
            await collect(b, SampleRequest("What is 1+1?", max_tokens=20))
        assert info.value.retriable is False
        assert "wrong-key" not in info.value.message

        monkeypatch.setenv("TTC_TEST_ANTHROPIC_OTHER_KEY", KEY)  # a rotated key is read anew
        assert await b.ready() is True
        _, result = await collect(b, SampleRequest("What is 1+1?", max_tokens=20))
        assert result.text.endswith("2")
    finally:
        await b.aclose()


async def test_missing_usage_falls_back_to_an_estimate(
    anthropic_server: AnthropicDemoServer,
) -> None:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint, model="demo-no-usage"))
    try:
        _, result = await collect(b, SampleRequest(LONG_PROMPT, max_tokens=40))
    finally:
        await b.aclose()
    assert result.usage_estimated is True
    assert result.output_tokens == math.ceil(len(result.text) / 4)
    assert result.input_tokens == math.ceil(len(LONG_PROMPT) / 4)


async def test_one_sample_per_request(backend: AnthropicBackend) -> None:
    assert backend.max_n == 1
    with pytest.raises(BackendError, match="n=3"):
        await collect(backend, SampleRequest("hi", max_tokens=5, n=3))


async def test_consumer_stopping_early_does_not_hang(
    anthropic_server: AnthropicDemoServer,
) -> None:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint, max_concurrency=1))
    try:
        await check_consumer_stopping_early(b, LONG_PROMPT)
    finally:
        await b.aclose()


async def test_max_concurrency_is_respected(anthropic_server: AnthropicDemoServer) -> None:
    b = AnthropicBackend("premium", tier_config(anthropic_server.endpoint, max_concurrency=2))
    try:
        await check_max_concurrency(b, 2, [(a, a + 3) for a in range(31, 36)])
    finally:
        await b.aclose()


async def test_factory_builds_it_behind_retries_and_a_breaker(
    anthropic_server: AnthropicDemoServer,
) -> None:
    b = build_backend("premium", tier_config(anthropic_server.endpoint))
    try:
        assert isinstance(b, ResilientBackend)
        assert isinstance(b.inner, AnthropicBackend)
        assert (b.tier, b.max_n) == ("premium", 1)
        assert await b.ready() is True
        _, result = await collect(b, SampleRequest("What is 12*12?", max_tokens=60))
        assert result.text.endswith("144")
    finally:
        await b.aclose()


def test_wrong_protocol_or_endpoint_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ConfigError, match="protocol 'anthropic'"):
        AnthropicBackend(
            "premium",
            TierConfig(
                protocol="openai",
                endpoint="http://127.0.0.1:1",
                model="m",
                price=PriceConfig(input_per_mtok=1.0, output_per_mtok=1.0),
            ),
        )
    with pytest.raises(ConfigError, match="http"):
        AnthropicBackend("premium", tier_config(f"file://{tmp_path}"))

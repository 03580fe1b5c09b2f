"""ResilientBackend around real adapters talking to real (demo) servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from router.backends.demo.answers import FAULT_AFTER_TOKENS, FAULT_MID_STREAM
from router.backends.demo.launcher import AnthropicDemoServer, OpenAIDemoServer, free_port
from router.backends.factory import build_backend
from router.backends.resilience import ResilientBackend
from router.config.backends import PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError, BackendUnavailable
from tests.integration.backend_contract import collect

pytestmark = pytest.mark.integration

QUESTION = "What is 17*23?"


@pytest.fixture(scope="module")
def anthropic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnthropicDemoServer]:
    """The demo Anthropic server as a child process, without a key check."""
    server = AnthropicDemoServer(tmp_path_factory.mktemp("demo-anthropic"), api_key_env=None)
    try:
        server.wait_ready(timeout_s=30.0)
        yield server
    finally:
        server.stop()


def tier_config(protocol: str, endpoint: str, **extra: Any) -> TierConfig:
    fields: dict[str, Any] = {
        "protocol": protocol,
        "endpoint": endpoint,
        "model": "demo-premium" if protocol == "anthropic" else "demo-32b",
        "price": PriceConfig(input_per_mtok=1.0, output_per_mtok=2.0),
        "timeout_s": 20.0,
        "retry": {"max_attempts": 3, "base_delay_s": 0.02, "max_delay_s": 0.1},
        "breaker": {"failure_threshold": 5, "open_s": 30.0},
    }
    fields.update(extra)
    return TierConfig.model_validate(fields)


def resilient(protocol: str, endpoint: str, **extra: Any) -> ResilientBackend:
    backend = build_backend("tier-x", tier_config(protocol, endpoint, **extra))
    assert isinstance(backend, ResilientBackend)
    return backend


@pytest.fixture(params=["anthropic", "openai"])
def server(
    request: pytest.FixtureRequest,
    anthropic_server: AnthropicDemoServer,
    demo_openai: OpenAIDemoServer,
) -> tuple[str, str]:
    """``(protocol, endpoint)`` of a demo server speaking that protocol."""
    protocol: str = request.param
    endpoint = anthropic_server.endpoint if protocol == "anthropic" else demo_openai.endpoint
    return protocol, endpoint


async def test_connection_refused_is_retried_then_the_tier_is_unavailable(
    server: tuple[str, str],
) -> None:
    protocol, _ = server
    closed = f"http://127.0.0.1:{free_port()}"
    backend = resilient(protocol, closed, breaker={"failure_threshold": 3, "open_s": 30.0})
    try:
        with pytest.raises(BackendUnavailable) as info:
            await collect(backend, SampleRequest(QUESTION, max_tokens=20))
        assert "retries used up after 3 attempts" in info.value.message
        assert "cannot connect" in info.value.message
        assert backend.retries == 2

        # three failures in a row: the breaker is open and refuses at once
        assert backend.state == "open"
        assert await backend.ready() is False
        with pytest.raises(BackendUnavailable, match="circuit open after 3 failures; retry in"):
            await collect(backend, SampleRequest(QUESTION, max_tokens=20))
        assert backend.retries == 2
    finally:
        await backend.aclose()


async def test_flaky_server_succeeds_on_the_third_attempt(server: tuple[str, str]) -> None:
    protocol, endpoint = server
    backend = resilient(protocol, endpoint)
    prompt = f"{QUESTION} [demo-fault:flaky-2] ({protocol} flaky)"
    try:
        _, result = await collect(backend, SampleRequest(prompt, max_tokens=200))
    finally:
        await backend.aclose()
    assert result.text.endswith("391")
    assert backend.retries == 2
    assert backend.state == "closed"


async def test_http_500_is_retried_until_attempts_run_out(server: tuple[str, str]) -> None:
    protocol, endpoint = server
    backend = resilient(protocol, endpoint)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await collect(backend, SampleRequest("hi [demo-fault:http-500]", max_tokens=20))
    finally:
        await backend.aclose()
    assert backend.retries == 2
    assert "retries used up after 3 attempts" in info.value.message
    assert "HTTP 500" in info.value.message


async def test_http_400_is_not_retried(server: tuple[str, str]) -> None:
    protocol, endpoint = server
    backend = resilient(protocol, endpoint)
    try:
        with pytest.raises(BackendError, match="HTTP 400") as info:
            await collect(backend, SampleRequest("hi [demo-fault:http-400]", max_tokens=20))
    finally:
        await backend.aclose()
    assert not isinstance(info.value, BackendUnavailable)
    assert backend.retries == 0


async def test_failure_mid_stream_is_not_retried(server: tuple[str, str]) -> None:
    protocol, endpoint = server
    backend = resilient(protocol, endpoint)
    prompt = f"Explain how a write-ahead log keeps a database consistent. {FAULT_MID_STREAM}"
    deltas: list[str] = []
    try:
        with pytest.raises(BackendError) as info:
            async for item in backend.stream(SampleRequest(prompt, max_tokens=200)):
                assert isinstance(item, TextDelta)
                deltas.append(item.text)
    finally:
        await backend.aclose()
    assert not isinstance(info.value, BackendUnavailable)
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert backend.retries == 0


async def test_retries_give_up_when_the_callers_time_runs_out(
    anthropic_server: AnthropicDemoServer,
) -> None:
    backend = resilient(
        "anthropic",
        anthropic_server.endpoint,
        retry={"max_attempts": 10, "base_delay_s": 0.2, "max_delay_s": 5.0},
        breaker={"failure_threshold": 20, "open_s": 30.0},
    )
    prompt = f"{QUESTION} [demo-fault:flaky-9] (deadline)"
    try:
        with pytest.raises(BackendUnavailable, match="no time left for another attempt"):
            await collect(backend, SampleRequest(prompt, max_tokens=50, timeout_s=0.5))
    finally:
        await backend.aclose()
    assert 1 <= backend.retries < 9


async def test_open_breaker_lets_a_trial_through_and_closes_on_success(
    anthropic_server: AnthropicDemoServer,
) -> None:
    backend = resilient(
        "anthropic",
        anthropic_server.endpoint,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 2, "open_s": 0.3},
    )
    try:
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await collect(backend, SampleRequest("hi [demo-fault:unavailable]", max_tokens=5))
        assert backend.state == "open"
        with pytest.raises(BackendUnavailable, match="circuit open"):
            await collect(backend, SampleRequest(QUESTION, max_tokens=200))

        await asyncio.sleep(0.35)  # open_s has passed
        assert backend.state == "half_open"
        assert await backend.ready() is True
        _, result = await collect(backend, SampleRequest(QUESTION, max_tokens=200))
        assert result.text.endswith("391")
        assert backend.state == "closed"
    finally:
        await backend.aclose()

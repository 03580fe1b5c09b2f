"""TritonBackend against a real Triton server serving the simulated 7B model (PyTriton)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from router.backends.demo.answers import (
    DEMO_TRITON_MODEL,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    count_tokens,
    simulate,
)
from router.backends.demo.launcher import TritonDemoServer, free_port
from router.backends.factory import build_backend
from router.backends.triton import TritonBackend
from router.config.backends import PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError, BackendTimeout
from tests.integration.backend_contract import (
    check_consumer_stopping_early,
    check_max_concurrency,
    collect,
)

pytestmark = pytest.mark.integration

LONG_PROMPT = "Write a Python function that merges overlapping intervals and explain the code."
SAMPLED_PROMPT = "Explain why rivers meander across flat plains."


def tier_config(endpoint: str, model: str = DEMO_TRITON_MODEL.name, **extra: object) -> TierConfig:
    fields: dict[str, object] = {
        "protocol": "triton",
        "endpoint": endpoint,
        "model": model,
        "price": PriceConfig(input_per_mtok=0.05, output_per_mtok=0.10),
        "timeout_s": 20.0,
    }
    fields.update(extra)
    return TierConfig.model_validate(fields)


@pytest.fixture
async def backend(demo_triton: TritonDemoServer) -> AsyncIterator[TritonBackend]:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint))
    yield b
    await b.aclose()


async def test_streams_a_greedy_answer(backend: TritonBackend) -> None:
    prompt = "What is 17*23?"
    expected = simulate(prompt, skill=DEMO_TRITON_MODEL.skill)

    deltas, result = await collect(backend, SampleRequest(prompt, max_tokens=200))

    assert "".join(deltas) == result.text == expected.text
    assert result.text.endswith("391")
    assert result.output_tokens == len(expected.tokens) == len(deltas)
    assert result.input_tokens == count_tokens(prompt)
    assert result.finish_reason == "stop"


async def test_max_tokens_is_honoured(backend: TritonBackend) -> None:
    expected = simulate(LONG_PROMPT, skill=DEMO_TRITON_MODEL.skill)
    assert len(expected.tokens) > 7

    deltas, result = await collect(backend, SampleRequest(LONG_PROMPT, max_tokens=7))

    assert result.output_tokens == 7 == len(deltas)
    assert result.text == "".join(expected.tokens[:7])
    assert result.finish_reason == "length"


async def test_max_tokens_is_capped_by_the_tier(demo_triton: TritonDemoServer) -> None:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint, max_output_tokens=5))
    try:
        _, result = await collect(b, SampleRequest(LONG_PROMPT, max_tokens=400))
    finally:
        await b.aclose()
    assert result.output_tokens == 5
    assert result.finish_reason == "length"


async def test_seed_and_temperature_reach_the_model(backend: TritonBackend) -> None:
    n = 40
    a = simulate(SAMPLED_PROMPT, skill=DEMO_TRITON_MODEL.skill, seed=1, temperature=0.8).tokens[:n]
    b = simulate(SAMPLED_PROMPT, skill=DEMO_TRITON_MODEL.skill, seed=2, temperature=0.8).tokens[:n]
    assert a != b

    _, first = await collect(backend, SampleRequest(SAMPLED_PROMPT, n, temperature=0.8, seed=1))
    _, second = await collect(backend, SampleRequest(SAMPLED_PROMPT, n, temperature=0.8, seed=2))
    _, again = await collect(backend, SampleRequest(SAMPLED_PROMPT, n, temperature=0.8, seed=1))

    assert (first.text, second.text) == ("".join(a), "".join(b))
    assert again.text == first.text


async def test_deadline_raises_backend_timeout(backend: TritonBackend) -> None:
    expected = simulate(LONG_PROMPT, skill=DEMO_TRITON_MODEL.skill)
    assert len(expected.tokens) > 150  # at 2 ms a token this takes well over 0.3 s

    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="local-7b"):
        await collect(backend, SampleRequest(LONG_PROMPT, max_tokens=600, timeout_s=0.15))
    assert time.monotonic() - started < 1.0
    assert backend.limits.in_use == 0


async def test_tier_timeout_bounds_the_call(demo_triton: TritonDemoServer) -> None:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint, timeout_s=0.15))
    try:
        with pytest.raises(BackendTimeout):
            await collect(b, SampleRequest(LONG_PROMPT, max_tokens=600, timeout_s=30.0))
    finally:
        await b.aclose()


async def test_unknown_model_is_a_backend_error(demo_triton: TritonDemoServer) -> None:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint, model="no-such-model"))
    try:
        assert await b.ready() is False
        with pytest.raises(BackendError, match="no-such-model") as info:
            await collect(b, SampleRequest("hello", max_tokens=5))
        assert not isinstance(info.value, BackendTimeout)
        assert "local-7b" in info.value.message
    finally:
        await b.aclose()


async def test_failure_mid_stream_is_a_backend_error(backend: TritonBackend) -> None:
    deltas: list[str] = []
    with pytest.raises(BackendError, match="simulated engine failure"):
        async for item in backend.stream(SampleRequest(f"Explain rivers {FAULT_MID_STREAM}", 100)):
            assert isinstance(item, TextDelta)
            deltas.append(item.text)
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert backend.limits.in_use == 0


async def test_consumer_stopping_early_does_not_hang(demo_triton: TritonDemoServer) -> None:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint, max_concurrency=1))
    try:
        await check_consumer_stopping_early(b, LONG_PROMPT)
    finally:
        await b.aclose()


async def test_max_concurrency_is_respected(demo_triton: TritonDemoServer) -> None:
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint, max_concurrency=2))
    try:
        await check_max_concurrency(b, 2, [(a, a + 1) for a in range(11, 16)])
    finally:
        await b.aclose()


async def test_ready_reflects_the_server(backend: TritonBackend) -> None:
    assert await backend.ready() is True
    down = TritonBackend("local-7b", tier_config(f"127.0.0.1:{free_port()}"))
    try:
        assert await down.ready() is False
    finally:
        await down.aclose()


async def test_unreachable_server_is_a_backend_error() -> None:
    b = TritonBackend("local-7b", tier_config(f"127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(BackendError, match="local-7b"):
            await collect(b, SampleRequest("hello", max_tokens=5, timeout_s=5.0))
    finally:
        await b.aclose()


async def test_factory_builds_the_triton_adapter(demo_triton: TritonDemoServer) -> None:
    b = build_backend("local-7b", tier_config(demo_triton.endpoint))
    try:
        assert isinstance(b, TritonBackend)
        assert b.tier == "local-7b"
        assert await b.ready() is True
    finally:
        await b.aclose()

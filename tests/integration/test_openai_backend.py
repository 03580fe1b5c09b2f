"""OpenAICompatibleBackend against the demo OpenAI-compatible server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    generate,
    simulate,
)
from router.backends.demo.launcher import OpenAIDemoServer, free_port
from router.backends.demo.openai_server import start_demo_openai_server
from router.backends.factory import build_adapter, build_backend
from router.backends.openai_compatible import OpenAICompatibleBackend, split_tokens
from router.backends.resilience import ResilientBackend
from router.config.backends import PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError, BackendTimeout
from tests.integration.backend_contract import (
    check_consumer_stopping_early,
    check_continuation,
    check_fault_markers,
    check_logprobs,
    check_max_concurrency,
    check_scripted_samples,
    check_stop,
    collect,
    collect_n,
    unique,
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


async def reported_usage(
    endpoint: str, model: str, prompt: str, max_tokens: int, **extra: object
) -> dict[str, int]:
    """What the server itself reports for the same request, asked without streaming."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{endpoint}/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
                **extra,
            },
        )
    response.raise_for_status()
    usage: dict[str, int] = response.json()["usage"]
    return usage


async def server_record(endpoint: str, prompt: str) -> dict[str, object]:
    """The demo server's record of the one request it saw with ``prompt``, once it is over."""
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            stats = (await client.get(f"{endpoint}/demo/stats")).json()
            records = [r for r in stats["recent"] if r["prompt"] == prompt]
            assert len(records) == 1
            if records[0]["outcome"] != "running":
                record: dict[str, object] = records[0]
                return record
            await asyncio.sleep(0.05)
    raise AssertionError(f"the server still sees {prompt!r} running")


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
    assert result.usage_estimated is False
    assert result.mean_logprob is None


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
        assert "The model 'no-such' does not exist" in info.value.message  # the server's words
        assert info.value.retriable is False
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
        assert info.value.retriable is True
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
        assert info.value.retriable is True
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
        assert info.value.retriable is True
        assert info.value.partial_output_tokens == FAULT_AFTER_TOKENS
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
    assert result.usage_estimated is True


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
    cfg = tier_config(demo_openai.endpoint, model="demo-premium", n_per_request=8)
    bare = build_adapter("premium", cfg)
    wrapped = build_backend("premium", cfg)
    try:
        assert isinstance(bare, OpenAICompatibleBackend)
        assert isinstance(wrapped, ResilientBackend)
        assert isinstance(wrapped.inner, OpenAICompatibleBackend)
        assert bare.tier == wrapped.tier == "premium"
        assert bare.max_n == wrapped.max_n == 8
        assert await bare.ready() is True
        assert await wrapped.ready() is True
    finally:
        await bare.aclose()
        await wrapped.aclose()


# ---------------------------------------------------------------------------------------
# stop strings, log-probabilities, continuation, scripted samples, faults


async def test_stop_strings_end_the_text(backend: OpenAICompatibleBackend) -> None:
    await check_stop(backend, MID.skill)


async def test_logprobs_give_the_mean_per_token(backend: OpenAICompatibleBackend) -> None:
    await check_logprobs(backend, MID.skill)


async def test_an_assistant_prefix_is_continued(backend: OpenAICompatibleBackend) -> None:
    await check_continuation(backend, MID.skill)


async def test_a_foreign_prefix_is_followed_by_the_answer(
    backend: OpenAICompatibleBackend,
) -> None:
    prompt = "What is 17*23?"
    _, result = await collect(backend, SampleRequest(prompt, 200, continuation="Let me think."))
    assert result.text == "\n\n" + simulate(prompt, skill=MID.skill).text


async def test_scripted_samples_follow_the_seed(backend: OpenAICompatibleBackend) -> None:
    await check_scripted_samples(backend)


async def test_fault_markers_become_the_right_errors(backend: OpenAICompatibleBackend) -> None:
    await check_fault_markers(backend)


# ---------------------------------------------------------------------------------------
# n samples in one request


async def test_n_choices_in_one_request(
    backend: OpenAICompatibleBackend, demo_openai: OpenAIDemoServer
) -> None:
    prompt = "Explain why rivers meander across flat plains."
    request = SampleRequest(prompt, 60, temperature=0.8, seed=10, n=3, logprobs=True)

    deltas, results = await collect_n(backend, request)

    expected = [
        generate(prompt, skill=MID.skill, seed=10 + i, temperature=0.8, max_tokens=60)
        for i in range(3)
    ]
    assert len({g.text for g in expected}) == 3  # three different samples
    for i, (result, gen) in enumerate(zip(results, expected, strict=True)):
        assert result.index == i
        assert result.text == "".join(deltas[i]) == gen.text
        assert result.finish_reason == gen.finish
        assert result.output_tokens == gen.output_tokens
        assert result.mean_logprob == pytest.approx(sum(gen.logprobs) / len(gen.logprobs))
        assert result.usage_estimated is False
    usage = await reported_usage(
        demo_openai.endpoint, MID.name, prompt, 60, n=3, seed=10, temperature=0.8
    )
    assert sum(r.output_tokens for r in results) == usage["completion_tokens"]
    assert [r.input_tokens for r in results] == [usage["prompt_tokens"], 0, 0]


async def test_usage_of_n_choices_sums_to_the_servers_when_tokens_are_hidden(
    backend: OpenAICompatibleBackend, demo_openai: OpenAIDemoServer
) -> None:
    # tokens inside a stop string are counted by the server but never streamed: the
    # server's total is shared out so that the choices still add up to it
    prompt = "What is 4821 * 7733?"
    request = SampleRequest(prompt, 200, temperature=0.9, seed=1, n=4, stop=(" + ", "."))

    _, results = await collect_n(backend, request)

    usage = await reported_usage(
        demo_openai.endpoint,
        MID.name,
        prompt,
        200,
        n=4,
        seed=1,
        temperature=0.9,
        stop=[" + ", "."],
    )
    streamed = sum(
        len(
            [
                p
                for p in generate(
                    prompt, skill=MID.skill, seed=1 + i, temperature=0.9, stop=(" + ", ".")
                ).pieces
                if p
            ]
        )
        for i in range(4)
    )
    assert streamed < usage["completion_tokens"]
    assert sum(r.output_tokens for r in results) == usage["completion_tokens"]
    assert all(r.finish_reason == "stop" for r in results)


def test_usage_split_rule() -> None:
    assert split_tokens(10, [3, 3, 4]) == [3, 3, 4]
    assert split_tokens(12, [3, 3, 4]) == [4, 3, 5]  # largest remainders: 0.8, then 0.6
    assert split_tokens(7, [0, 0, 0]) == [3, 2, 2]
    assert split_tokens(5, [1, 0]) == [5, 0]
    for total, counts in [(101, [7, 13, 29, 1]), (3, [5, 5, 5, 5]), (0, [2, 2])]:
        assert sum(split_tokens(total, counts)) == total


async def test_a_slow_scripted_sample_finishes_last(backend: OpenAICompatibleBackend) -> None:
    prompt = unique("What is 17*23? [demo-samples:391,390@slow]")
    order: list[int] = []
    async for item in backend.stream(SampleRequest(prompt, 100, temperature=0.7, n=2)):
        if isinstance(item, TextDelta):
            order.append(item.index)
        else:
            assert item.text.endswith(("391", "390")[item.index])
    # the fast sample streams every token before the slow one is a third of the way through
    fast_done = max(i for i, x in enumerate(order) if x == 0)
    assert order[:fast_done].count(1) <= order.count(1) // 3


async def test_n_above_the_tier_limit_is_refused(demo_openai: OpenAIDemoServer) -> None:
    b = OpenAICompatibleBackend("mid-32b", tier_config(demo_openai.endpoint, n_per_request=2))
    try:
        assert b.max_n == 2
        with pytest.raises(BackendError, match="n=3") as info:
            await collect_n(b, SampleRequest("What is 2+2?", 20, n=3))
        assert info.value.retriable is False
        assert b.limits.in_use == 0
    finally:
        await b.aclose()


# ---------------------------------------------------------------------------------------
# cancellation, seen from the server


async def test_closing_the_stream_cancels_the_request_on_the_server(
    backend: OpenAICompatibleBackend, demo_openai: OpenAIDemoServer
) -> None:
    prompt = unique(LONG_PROMPT)
    total = generate(prompt, skill=MID.skill, max_tokens=600).output_tokens
    assert total > 50

    stream = backend.stream(SampleRequest(prompt, max_tokens=600))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()

    record = await server_record(demo_openai.endpoint, prompt)
    assert record["outcome"] == "cancelled"
    assert isinstance(record["tokens_streamed"], int)
    assert 3 <= record["tokens_streamed"] < total

    # a stream read to its end is recorded as completed, every token sent
    done = unique("What is 6*7?")
    _, result = await collect(backend, SampleRequest(done, max_tokens=100))
    record = await server_record(demo_openai.endpoint, done)
    assert record["outcome"] == "completed"
    assert record["tokens_streamed"] == result.output_tokens


async def test_the_hosted_openai_dialect_limits_completion_tokens_and_refuses_prefixes(
    demo_openai: OpenAIDemoServer,
) -> None:
    """``dialect: openai`` sends ``max_completion_tokens`` (the demo server honours it like
    the hosted API) and refuses a continuation before calling, with a message that says
    which strategies need a self-hosted tier."""
    b = OpenAICompatibleBackend("premium", tier_config(demo_openai.endpoint, dialect="openai"))
    try:
        assert b._body(SampleRequest("q", 7), 7)["max_completion_tokens"] == 7
        assert "max_tokens" not in b._body(SampleRequest("q", 7), 7)
        _, result = await collect(b, SampleRequest("Write a long story about a lighthouse.", 5))
        assert result.output_tokens == 5 and result.finish_reason == "length"
        with pytest.raises(BackendError, match="cannot continue a partial answer") as err:
            await collect(b, SampleRequest("What is 2+2?", 20, continuation="Let me think."))
        assert not err.value.retriable
    finally:
        await b.aclose()

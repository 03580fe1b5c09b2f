"""TritonBackend against a real Triton server serving the simulated 7B model (PyTriton)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import pytest

from router.backends.demo.answers import (
    DEMO_TRITON_MODEL,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    count_tokens,
    generate,
    simulate,
)
from router.backends.demo.launcher import TritonDemoServer, free_port
from router.backends.demo.triton_model import TRTLLM_SUFFIX
from router.backends.factory import build_adapter, build_backend
from router.backends.resilience import ResilientBackend
from router.backends.triton import StopScanner, TritonBackend
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
)

pytestmark = pytest.mark.integration

LONG_PROMPT = "Write a Python function that merges overlapping intervals and explain the code."
SAMPLED_PROMPT = "Explain why rivers meander across flat plains."
SKILL = DEMO_TRITON_MODEL.skill
TRTLLM_MODEL = DEMO_TRITON_MODEL.name + TRTLLM_SUFFIX


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


@pytest.fixture
async def trtllm(demo_triton: TritonDemoServer) -> AsyncIterator[TritonBackend]:
    """The same simulated model behind TensorRT-LLM's ensemble interface."""
    b = TritonBackend(
        "local-7b", tier_config(demo_triton.endpoint, model=TRTLLM_MODEL, interface="trtllm")
    )
    yield b
    await b.aclose()


@pytest.fixture(params=["vllm", "trtllm"])
async def either(
    demo_triton: TritonDemoServer, request: pytest.FixtureRequest
) -> AsyncIterator[TritonBackend]:
    """The adapter on each Triton interface in turn."""
    model = TRTLLM_MODEL if request.param == "trtllm" else DEMO_TRITON_MODEL.name
    b = TritonBackend(
        "local-7b", tier_config(demo_triton.endpoint, model=model, interface=request.param)
    )
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
    assert result.usage_estimated is False
    assert result.mean_logprob is None


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
        assert info.value.retriable is False
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
        with pytest.raises(BackendError, match="local-7b") as info:
            await collect(b, SampleRequest("hello", max_tokens=5, timeout_s=5.0))
        assert info.value.retriable is True
        assert info.value.partial_output_tokens == 0
    finally:
        await b.aclose()


async def test_factory_builds_the_triton_adapter(demo_triton: TritonDemoServer) -> None:
    cfg = tier_config(demo_triton.endpoint, interface="trtllm", model=TRTLLM_MODEL)
    bare = build_adapter("local-7b", cfg)
    wrapped = build_backend("local-7b", cfg)
    try:
        assert isinstance(bare, TritonBackend)
        assert isinstance(wrapped, ResilientBackend)
        assert isinstance(wrapped.inner, TritonBackend)
        assert bare.tier == wrapped.tier == "local-7b"
        assert bare.max_n == wrapped.max_n == 1
        assert await bare.ready() is True
        assert await wrapped.ready() is True
    finally:
        await bare.aclose()
        await wrapped.aclose()


# ---------------------------------------------------------------------------------------
# stop strings, log-probabilities, continuation, scripted samples, faults: both interfaces


async def test_stop_strings_end_the_text(either: TritonBackend) -> None:
    await check_stop(either, SKILL)


async def test_logprobs_give_the_mean_per_token(either: TritonBackend) -> None:
    await check_logprobs(either, SKILL)


async def test_an_assistant_prefix_is_continued(either: TritonBackend) -> None:
    await check_continuation(either, SKILL)


async def test_scripted_samples_follow_the_seed(either: TritonBackend) -> None:
    await check_scripted_samples(either)


async def test_fault_markers_become_the_right_errors(either: TritonBackend) -> None:
    await check_fault_markers(either)


async def test_one_sample_per_request(either: TritonBackend) -> None:
    assert either.max_n == 1
    with pytest.raises(BackendError, match="max_n=1") as info:
        await collect(either, SampleRequest("What is 2+2?", 20, n=2))
    assert info.value.retriable is False
    assert either.limits.in_use == 0


# ---------------------------------------------------------------------------------------
# TensorRT-LLM ensemble interface


async def test_trtllm_streams_a_greedy_answer_with_estimated_usage(trtllm: TritonBackend) -> None:
    prompt = "What is 17*23?"
    expected = simulate(prompt, skill=SKILL)

    deltas, result = await collect(trtllm, SampleRequest(prompt, max_tokens=200))

    assert "".join(deltas) == result.text == expected.text
    assert result.finish_reason == "stop"
    assert result.usage_estimated is True  # the ensemble reports no token counts
    assert result.output_tokens == len(expected.tokens)  # one streamed response per token
    assert result.input_tokens == math.ceil(len(prompt) / 4)


async def test_trtllm_max_tokens_and_sampling(trtllm: TritonBackend) -> None:
    _, cut = await collect(trtllm, SampleRequest(LONG_PROMPT, max_tokens=7))
    assert cut.text == "".join(simulate(LONG_PROMPT, skill=SKILL).tokens[:7])
    assert (cut.output_tokens, cut.finish_reason) == (7, "length")

    for seed in (3, 4):
        request = SampleRequest(SAMPLED_PROMPT, 30, temperature=0.9, seed=seed)
        _, sampled = await collect(trtllm, request)
        expected = generate(SAMPLED_PROMPT, skill=SKILL, seed=seed, temperature=0.9, max_tokens=30)
        assert sampled.text == expected.text


async def test_trtllm_stop_word_is_cut_from_the_text(trtllm: TritonBackend) -> None:
    # the ensemble keeps a stop word in its output (so does the demo): the adapter cuts it
    prompt = "What is 17*23?"
    kept = generate(prompt, skill=SKILL, stop=("=",), include_stop=True)
    assert kept.text.endswith("=")
    _, result = await collect(trtllm, SampleRequest(prompt, 200, stop=("=",)))
    assert result.text == kept.text[:-1]
    assert result.output_tokens == kept.output_tokens


def test_stop_scanner_holds_back_a_possible_stop_string() -> None:
    scanner = StopScanner(["STOP", "##"])
    assert scanner.feed("abc S") == "abc "
    assert scanner.feed("T") == ""
    assert scanner.feed("x #") == "STx "
    assert scanner.feed("#y") == ""
    assert scanner.hit
    assert scanner.feed("more") == "" and scanner.flush() == ""

    open_end = StopScanner(["STOP"])
    assert open_end.feed("to ST") == "to "
    assert open_end.flush() == "ST" and not open_end.hit
    assert StopScanner([]).feed("anything") == "anything"


async def test_a_dead_session_server_comes_back_on_the_same_ports(
    demo_triton: TritonDemoServer,
) -> None:
    """``restart_if_dead`` starts a crashed server again where callers expect it."""
    import os
    import signal

    endpoint, restarts = demo_triton.endpoint, demo_triton.restarts
    assert demo_triton.restart_if_dead() is False  # alive: nothing to do
    os.killpg(demo_triton.process.pid, signal.SIGKILL)  # what a crash leaves
    demo_triton.process.proc.wait(timeout=10)
    assert demo_triton.restart_if_dead() is True
    assert demo_triton.endpoint == endpoint and demo_triton.restarts == restarts + 1
    b = TritonBackend("local-7b", tier_config(demo_triton.endpoint))
    try:
        _, result = await collect(b, SampleRequest("What is 17*23?", 40))
        assert result.output_tokens > 0
    finally:
        await b.aclose()


def test_kill_the_session_server_between_tests(demo_triton: TritonDemoServer) -> None:
    """Leaves the server dead; the next test finds it restarted by the session's autouse
    check (tests run in file order)."""
    import os
    import signal

    os.killpg(demo_triton.process.pid, signal.SIGKILL)
    demo_triton.process.proc.wait(timeout=10)
    assert not demo_triton.process.alive()


async def test_the_next_test_finds_the_server_restarted(backend: TritonBackend) -> None:
    _, result = await collect(backend, SampleRequest("What is 17*23?", 40))
    assert result.output_tokens > 0

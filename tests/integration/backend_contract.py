"""Checks every Backend adapter must pass, shared by the Triton and OpenAI adapter tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import time
from typing import Any

import pytest

from router.backends.demo.answers import (
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    FAULT_SLOW,
    generate,
    simulate,
)
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout


async def collect(backend: Any, request: SampleRequest) -> tuple[list[str], SampleResult]:
    """All deltas and the one final result; nothing may follow the result."""
    deltas: list[str] = []
    result: SampleResult | None = None
    async for item in backend.stream(request):
        assert result is None, "nothing may follow the SampleResult"
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            result = item
    assert result is not None
    return deltas, result


async def check_consumer_stopping_early(backend: Any, long_prompt: str) -> None:
    """A consumer that stops (aclose, break, or cancel) frees the single slot at once."""
    started = time.monotonic()
    stream = backend.stream(SampleRequest(long_prompt, max_tokens=600))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    assert backend.limits.in_use == 0

    # breaking out without aclose(): the event loop finalises the generator
    seen = 0
    async for _ in backend.stream(SampleRequest(long_prompt, max_tokens=600)):
        seen += 1
        if seen == 3:
            break
    for _ in range(100):
        if backend.limits.in_use == 0:
            break
        await asyncio.sleep(0.01)
    assert backend.limits.in_use == 0

    async def consume() -> None:
        async with contextlib.aclosing(backend.stream(SampleRequest(long_prompt, 600))) as events:
            async for _ in events:
                await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.limits.in_use == 0

    # the single slot is free again: a new call is served at once
    _, result = await collect(backend, SampleRequest("What is 6*7?", max_tokens=50))
    assert result.text.endswith("42")
    assert time.monotonic() - started < 3.0


async def check_max_concurrency(backend: Any, limit: int, pairs: list[tuple[int, int]]) -> None:
    """At most ``limit`` calls run at once, and each of the products is answered right."""
    peak = 0
    running = True

    async def watch() -> None:
        nonlocal peak
        while running:
            peak = max(peak, backend.limits.in_use)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(
            *(
                collect(backend, SampleRequest(f"What is {a}*{b}?", max_tokens=100))
                for a, b in pairs
            )
        )
    finally:
        running = False
        await watcher
    assert peak == limit
    for (a, b), (_, result) in zip(pairs, results, strict=True):
        assert result.text.endswith(str(a * b))


# ---------------------------------------------------------------------------------------
# features every adapter offers against the demo servers (``answers`` defines the demo model)


def unique(prompt: str) -> str:
    """``prompt`` with a random tag of letters, so per-prompt server state starts afresh."""
    tag = "".join(random.choices(string.ascii_lowercase, k=10))
    return f"{prompt} (run {tag})"


async def collect_n(
    backend: Any, request: SampleRequest
) -> tuple[dict[int, list[str]], list[SampleResult]]:
    """Deltas by sample index and the results (which must come last, one per index)."""
    deltas: dict[int, list[str]] = {}
    results: list[SampleResult] = []
    async for item in backend.stream(request):
        if isinstance(item, TextDelta):
            assert not results, "no delta may follow a SampleResult"
            deltas.setdefault(item.index, []).append(item.text)
        else:
            results.append(item)
    assert [r.index for r in results] == list(range(request.n))
    return deltas, results


async def check_stop(backend: Any, skill: float) -> None:
    """The text ends before the first stop string, and the finish reason says so."""
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=skill).text
    assert "=" in full
    deltas, result = await collect(backend, SampleRequest(prompt, 200, stop=("=", "Answer")))
    assert result.text == "".join(deltas) == full[: full.index("=")]
    assert result.finish_reason == "stop"
    assert 0 < result.output_tokens < len(simulate(prompt, skill=skill).tokens)

    # a stop string that never appears changes nothing
    _, plain = await collect(backend, SampleRequest(prompt, 200, stop=("@@",)))
    assert plain.text == full


async def check_logprobs(backend: Any, skill: float) -> None:
    """``mean_logprob`` is the demo model's per-token mean, higher for a right answer."""
    prompt = unique("What is 17*23? [demo-samples:391,390]")
    means = {}
    for seed in (0, 1):
        request = SampleRequest(prompt, 200, temperature=0.7, seed=seed, logprobs=True)
        _, result = await collect(backend, request)
        expected = generate(prompt, skill=skill, seed=seed, temperature=0.7)
        assert result.text == expected.text
        assert result.mean_logprob is not None
        assert result.mean_logprob == pytest.approx(
            sum(expected.logprobs) / len(expected.logprobs), abs=1e-3
        )
        means[seed] = result.mean_logprob
    assert means[0] > means[1]  # 391 is right, 390 is not
    assert -0.31 < means[0] < 0 and means[1] < -0.69

    _, without = await collect(backend, SampleRequest(prompt, 200, temperature=0.7))
    assert without.mean_logprob is None


async def check_continuation(backend: Any, skill: float) -> None:
    """The model continues an assistant prefix; the result holds only what it adds."""
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=skill).text
    prefix = full[:12]
    deltas, result = await collect(backend, SampleRequest(prompt, 200, continuation=prefix))
    assert result.text == "".join(deltas) == full[len(prefix) :]
    assert prefix + result.text == full
    assert result.output_tokens < len(simulate(prompt, skill=skill).tokens)


async def check_scripted_samples(backend: Any) -> None:
    """``[demo-samples:…]``: the sample with seed i answers the i-th value, cycling."""
    prompt = unique("What is 17*23? [demo-samples:391,390,391@slow]")
    finals = []
    for seed in range(4):
        request = SampleRequest(prompt, 100, temperature=0.7, seed=seed)
        _, result = await collect(backend, request)
        finals.append(result.text.rsplit("Answer: ", 1)[-1])
    assert finals == ["391", "390", "391", "391"]


async def check_fault_markers(backend: Any) -> None:
    """Each fault marker of the demo servers becomes the right ``BackendError``."""
    for marker, retriable in (("http-500", True), ("http-429", True), ("http-400", False)):
        with pytest.raises(BackendError) as info:
            await collect(backend, SampleRequest(f"Explain rivers [demo-fault:{marker}]", 50))
        assert info.value.retriable is retriable, marker
        assert info.value.partial_output_tokens == 0
        assert "simulated" in info.value.message  # the server's own message is kept
    assert backend.limits.in_use == 0

    # flaky-2: the first two requests with this exact prompt fail, retriably; then it works
    prompt = unique("What is 6*7? [demo-fault:flaky-2]")
    for _ in range(2):
        with pytest.raises(BackendError) as info:
            await collect(backend, SampleRequest(prompt, 50))
        assert info.value.retriable is True
        assert not isinstance(info.value, BackendTimeout)
    _, result = await collect(backend, SampleRequest(prompt, 50))
    assert result.text.endswith("42")

    # mid-stream: the tokens already streamed are reported for charging
    deltas: list[str] = []
    with pytest.raises(BackendError) as info:
        async for item in backend.stream(SampleRequest(f"Explain rivers {FAULT_MID_STREAM}", 100)):
            assert isinstance(item, TextDelta)
            deltas.append(item.text)
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert info.value.partial_output_tokens == FAULT_AFTER_TOKENS
    assert info.value.retriable is True

    # slow: a few tokens, then far slower than the deadline
    deltas = []
    with pytest.raises(BackendTimeout) as timeout:
        async for item in backend.stream(
            SampleRequest(f"What is 2+2? {FAULT_SLOW}", 5, timeout_s=1.0)
        ):
            assert isinstance(item, TextDelta)
            deltas.append(item.text)
    assert len(deltas) == FAULT_AFTER_TOKENS
    assert timeout.value.partial_output_tokens == FAULT_AFTER_TOKENS
    assert backend.limits.in_use == 0

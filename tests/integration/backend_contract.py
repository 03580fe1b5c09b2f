"""Checks every Backend adapter must pass, shared by the Triton and OpenAI adapter tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from router.core.types import SampleRequest, SampleResult, TextDelta


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

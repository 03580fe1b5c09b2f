"""ResilientBackend with scripted inner backends, a fake clock and a fake sleep."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import pytest

from router.backends.resilience import ResilientBackend, backoff_cap_s
from router.config.backends import PriceConfig, RetryConfig, TierConfig
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
)


class FakeClock:
    """Seconds that move only when a test (or the fake sleep) moves them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class HighestDraw(random.Random):
    """Every jittered pause takes its upper bound, so tests can check the caps exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Fail:
    """One scripted call that raises ``error`` after ``after`` deltas (0: before any)."""

    error: BaseException
    after: int = 0


@dataclass
class Stall:
    """One scripted call that waits until ``release`` is set, then answers."""

    release: asyncio.Event


class ScriptedCalls:
    """An inner backend whose calls follow a script; a call past the script answers."""

    def __init__(
        self, *script: Fail | Stall | None, clock: FakeClock | None = None, cost_s: float = 0.0
    ) -> None:
        self.script = list(script)
        self.requests: list[SampleRequest] = []
        self.clock = clock
        self.cost_s = cost_s
        self.ready_value = True
        self.closed = False

    @property
    def tier(self) -> str:
        return "t"

    @property
    def max_n(self) -> int:
        return 4

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else None
        if self.clock is not None:
            self.clock.now += self.cost_s
        if isinstance(step, Stall):
            await step.release.wait()
        words = ["one", " two", " three"]
        for i, w in enumerate(words):
            if isinstance(step, Fail) and i == step.after:
                raise step.error
            yield TextDelta(w)
        yield SampleResult("".join(words), 5, 3)

    async def ready(self) -> bool:
        return self.ready_value

    async def aclose(self) -> None:
        self.closed = True


def tier_config(
    *,
    max_attempts: int = 3,
    base_delay_s: float = 0.1,
    max_delay_s: float = 2.0,
    failure_threshold: int = 5,
    open_s: float = 30.0,
) -> TierConfig:
    return TierConfig.model_validate(
        {
            "protocol": "openai",
            "endpoint": "http://127.0.0.1:1",
            "model": "m",
            "price": PriceConfig(input_per_mtok=1.0, output_per_mtok=1.0),
            "retry": {
                "max_attempts": max_attempts,
                "base_delay_s": base_delay_s,
                "max_delay_s": max_delay_s,
            },
            "breaker": {"failure_threshold": failure_threshold, "open_s": open_s},
        }
    )


def wrap(
    inner: ScriptedCalls, clock: FakeClock, rng: random.Random | None = None, **cfg: Any
) -> ResilientBackend:
    return ResilientBackend(
        inner,
        tier_config(**cfg),
        clock=clock,
        sleep=clock.sleep,
        rng=rng or random.Random(7),
    )


async def run(backend: ResilientBackend, request: SampleRequest | None = None) -> list[str]:
    """Every event of one call: delta texts, then ``result:<text>``."""
    out: list[str] = []
    async for item in backend.stream(request or SampleRequest("hi", max_tokens=10)):
        out.append(item.text if isinstance(item, TextDelta) else f"result:{item.text}")
    return out


def retriable(n: int = 0) -> Fail:
    return Fail(BackendError(f"connection refused #{n}", retriable=True))


# --------------------------------------------------------------------------------- retries


async def test_retriable_failure_before_output_is_retried_until_it_succeeds() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(retriable(1), retriable(2))
    backend = wrap(inner, clock)

    events = await run(backend)

    assert events == ["one", " two", " three", "result:one two three"]
    assert len(inner.requests) == 3
    assert backend.retries == 2
    assert len(clock.sleeps) == 2
    assert backend.state == "closed" and backend.breaker.consecutive_failures == 0


async def test_non_retriable_failure_is_raised_unchanged_without_retry() -> None:
    error = BackendError("HTTP 400: prompt is too long")
    inner = ScriptedCalls(Fail(error))
    backend = wrap(inner, FakeClock())

    with pytest.raises(BackendError) as info:
        await run(backend)

    assert info.value is error
    assert len(inner.requests) == 1


async def test_failure_after_output_started_is_not_retried() -> None:
    error = BackendError("connection reset mid-stream", retriable=True, partial_output_tokens=2)
    inner = ScriptedCalls(Fail(error, after=2))
    backend = wrap(inner, FakeClock())
    seen: list[str] = []

    with pytest.raises(BackendError) as info:
        async for item in backend.stream(SampleRequest("hi", 10)):
            assert isinstance(item, TextDelta)
            seen.append(item.text)

    assert info.value is error and info.value.partial_output_tokens == 2
    assert seen == ["one", " two"]
    assert len(inner.requests) == 1


async def test_retries_used_up_raise_backend_unavailable_naming_attempts_and_cause() -> None:
    inner = ScriptedCalls(retriable(1), retriable(2), retriable(3), retriable(4))
    backend = wrap(inner, FakeClock(), max_attempts=3)

    with pytest.raises(BackendUnavailable) as info:
        await run(backend)

    assert len(inner.requests) == 3
    message = info.value.message
    assert message.startswith("tier 't' is unavailable: retries used up after 3 attempts")
    assert "last error: connection refused #3" in message
    assert isinstance(info.value.__cause__, BackendError)
    assert info.value.retriable is False


async def test_one_attempt_allowed_still_reports_the_tier_unavailable() -> None:
    inner = ScriptedCalls(retriable(1))
    backend = wrap(inner, FakeClock(), max_attempts=1)

    with pytest.raises(BackendUnavailable, match=r"after 1 attempt; last error"):
        await run(backend)
    assert len(inner.requests) == 1


async def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(*(retriable(i) for i in range(4)))
    backend = wrap(inner, clock, HighestDraw(), max_attempts=5, base_delay_s=0.1, max_delay_s=0.25)

    assert await run(backend) == ["one", " two", " three", "result:one two three"]

    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.25, 0.25])


async def test_backoff_is_jittered_between_zero_and_the_cap() -> None:
    cfg = RetryConfig(max_attempts=10, base_delay_s=0.1, max_delay_s=1.0)
    clock = FakeClock()
    inner = ScriptedCalls(*(retriable(i) for i in range(9)))
    backend = wrap(
        inner, clock, random.Random(3), max_attempts=10, max_delay_s=1.0, failure_threshold=10
    )

    await run(backend)

    assert len(clock.sleeps) == 9
    for attempt, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= backoff_cap_s(cfg, attempt)
    assert len(set(clock.sleeps)) == 9  # jittered, not a fixed schedule


async def test_retries_never_sleep_past_the_callers_deadline() -> None:
    clock = FakeClock()
    # each failed attempt itself takes 0.05 s of the caller's time
    inner = ScriptedCalls(*(retriable(i) for i in range(10)), clock=clock, cost_s=0.05)
    backend = wrap(inner, clock, HighestDraw(), max_attempts=10, base_delay_s=0.1)
    started = clock.now

    with pytest.raises(BackendUnavailable) as info:
        await run(backend, SampleRequest("hi", 10, timeout_s=0.35))

    # attempt 1 (0.05 s), pause 0.1 s, attempt 2 with 0.2 s left (0.05 s); a 0.2 s pause
    # would end past the deadline, so the backend gives up instead of sleeping
    assert [r.timeout_s for r in inner.requests] == pytest.approx([0.35, 0.2])
    assert clock.sleeps == pytest.approx([0.1])
    assert clock.now - started <= 0.35
    assert "no time left for another attempt after 2 attempts" in info.value.message


async def test_no_time_left_at_all_is_a_timeout_without_a_call() -> None:
    inner = ScriptedCalls()
    backend = wrap(inner, FakeClock())

    with pytest.raises(BackendTimeout):
        await run(backend, SampleRequest("hi", 10, timeout_s=0.0))
    assert inner.requests == []


# --------------------------------------------------------------------------------- breaker


async def test_breaker_opens_after_consecutive_failures_and_refuses_at_once() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(*(Fail(BackendError(f"HTTP 500 #{i}")) for i in range(3)))
    backend = wrap(inner, clock, failure_threshold=3, open_s=30.0)

    for _ in range(3):
        with pytest.raises(BackendError):
            await run(backend)
    assert backend.state == "open"
    assert await backend.ready() is False

    clock.now += 12.0
    with pytest.raises(BackendUnavailable) as info:
        await run(backend)

    assert info.value.message == (
        "tier 't' is unavailable: circuit open after 3 failures; retry in 18.0 s"
    )
    assert len(inner.requests) == 3  # the refused call never reached the backend


async def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    error = BackendError("HTTP 500")
    inner = ScriptedCalls(Fail(error), Fail(error), None, Fail(error), Fail(error))
    backend = wrap(inner, FakeClock(), failure_threshold=3)

    outcomes = []
    for _ in range(5):
        try:
            await run(backend)
            outcomes.append("ok")
        except BackendError:
            outcomes.append("fail")

    assert outcomes == ["fail", "fail", "ok", "fail", "fail"]
    assert backend.state == "closed"
    assert backend.breaker.consecutive_failures == 2


async def test_retries_stop_when_their_failures_open_the_breaker() -> None:
    inner = ScriptedCalls(*(retriable(i) for i in range(5)))
    backend = wrap(inner, FakeClock(), max_attempts=5, failure_threshold=2)

    with pytest.raises(BackendUnavailable, match="circuit open after 2 failures"):
        await run(backend)
    assert len(inner.requests) == 2
    assert backend.state == "open"


async def test_half_open_lets_one_trial_through_and_its_success_closes() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    inner = ScriptedCalls(Fail(BackendError("down")), Stall(release))
    backend = wrap(inner, clock, failure_threshold=1, open_s=10.0)
    with pytest.raises(BackendError):
        await run(backend)
    assert backend.state == "open"

    clock.now += 10.0
    assert backend.state == "half_open"
    inner.ready_value = False
    assert await backend.ready() is False  # half-open asks the adapter
    inner.ready_value = True
    assert await backend.ready() is True

    trial = asyncio.create_task(run(backend))
    await asyncio.sleep(0.01)
    with pytest.raises(BackendUnavailable, match="a trial call is in progress"):
        await run(backend)  # only one trial at a time
    release.set()
    assert (await trial)[-1] == "result:one two three"

    assert backend.state == "closed"
    assert await run(backend) == ["one", " two", " three", "result:one two three"]


async def test_failed_trial_opens_the_breaker_again() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(Fail(BackendError("down")), Fail(BackendError("still down")))
    backend = wrap(inner, clock, failure_threshold=1, open_s=10.0)
    with pytest.raises(BackendError):
        await run(backend)

    clock.now += 10.5
    with pytest.raises(BackendError, match="still down"):
        await run(backend)

    assert backend.state == "open"
    assert backend.breaker.times_opened == 2
    clock.now += 9.0
    with pytest.raises(BackendUnavailable, match=r"retry in 1\.0 s"):
        await run(backend)
    clock.now += 1.0
    assert await run(backend) == ["one", " two", " three", "result:one two three"]
    assert backend.state == "closed"


async def test_callers_cancellation_and_invalid_requests_do_not_count_as_failures() -> None:
    release = asyncio.Event()
    inner = ScriptedCalls(Stall(release), Fail(InvalidRequest("max_tokens must be >= 1")))
    backend = wrap(inner, FakeClock(), failure_threshold=1)

    task = asyncio.create_task(run(backend))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(InvalidRequest):
        await run(backend)

    assert backend.state == "closed"
    assert backend.breaker.consecutive_failures == 0


async def test_a_trial_the_caller_abandons_before_output_frees_the_trial_slot() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(Fail(BackendError("down")), Stall(asyncio.Event()))
    backend = wrap(inner, clock, failure_threshold=1, open_s=5.0)
    with pytest.raises(BackendError):
        await run(backend)
    clock.now += 5.0

    task = asyncio.create_task(run(backend))
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert backend.state == "half_open"
    assert await run(backend) == ["one", " two", " three", "result:one two three"]
    assert backend.state == "closed"


async def test_a_consumer_stopping_after_output_counts_as_success() -> None:
    clock = FakeClock()
    inner = ScriptedCalls(Fail(BackendError("down")))
    backend = wrap(inner, clock, failure_threshold=1, open_s=5.0)
    with pytest.raises(BackendError):
        await run(backend)
    clock.now += 5.0

    stream = backend.stream(SampleRequest("hi", 10))
    first = await anext(stream)
    await stream.aclose()

    assert first == TextDelta("one")
    assert backend.state == "closed"


async def test_tier_max_n_and_aclose_delegate() -> None:
    inner = ScriptedCalls()
    backend = wrap(inner, FakeClock())

    assert (backend.tier, backend.max_n) == ("t", 4)
    assert backend.inner is inner
    await backend.aclose()
    assert inner.closed

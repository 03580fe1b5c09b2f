"""Retries and a circuit breaker around any backend adapter.

``ResilientBackend`` wraps one tier's adapter. A call that fails with a retriable
``BackendError`` (connection refused, HTTP 429/5xx, Triton UNAVAILABLE) *before* its first
event is tried again, up to ``retry.max_attempts`` calls in all, after a full-jitter
exponential pause that never runs past the caller's time left. A failure after output has
started is never retried: the caller has already seen part of an answer.

The tier's circuit breaker counts failed calls in a row (each attempt is a call). At
``breaker.failure_threshold`` it opens: for ``breaker.open_s`` seconds every call is refused
at once with ``BackendUnavailable``, so the service can move to the tier's fallback instead
of waiting on a dead server. Then one trial call is let through (half-open); its success
closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Literal

from router.config.backends import BreakerConfig, RetryConfig, TierConfig
from router.core.protocols import Backend
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout, BackendUnavailable

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class CircuitBreaker:
    """The breaker of one tier. ``clock`` returns seconds (monotonic); tests pass their own."""

    def __init__(self, tier: str, cfg: BreakerConfig, clock: Clock = time.monotonic) -> None:
        self._tier = tier
        self._threshold = cfg.failure_threshold
        self._open_s = cfg.open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._opened_after = 0
        self._trial_running = False
        self.times_opened = 0
        """How often the breaker has opened since it was built (for metrics and tests)."""

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() < self._opened_at + self._open_s:
            return "open"
        return "half_open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _refusal(self) -> BackendUnavailable:
        assert self._opened_at is not None
        left = max(0.0, self._opened_at + self._open_s - self._clock())
        if left > 0:
            wait = f"retry in {left:.1f} s"
        else:
            wait = "a trial call is in progress; retry shortly"
        return BackendUnavailable(
            f"tier {self._tier!r} is unavailable: circuit open after "
            f"{self._opened_after} failure{'s' if self._opened_after != 1 else ''}; {wait}"
        )

    def admit(self) -> bool:
        """Let a call through or raise ``BackendUnavailable``; True when it is the trial call."""
        state = self.state
        if state == "closed":
            return False
        if state == "open" or self._trial_running:
            raise self._refusal()
        self._trial_running = True
        log.info("tier %r: circuit half-open, letting one trial call through", self._tier)
        return True

    def record_success(self, trial: bool) -> None:
        if trial:
            self._trial_running = False
        if self._opened_at is not None:
            log.info("tier %r: circuit closed, the tier answers again", self._tier)
        self._failures = 0
        self._opened_at = None

    def record_failure(self, trial: bool) -> None:
        self._failures += 1
        if trial:
            self._trial_running = False
            self._open("the trial call failed")
        elif self._opened_at is None and self._failures >= self._threshold:
            self._open(f"{self._failures} failed calls in a row")

    def release(self, trial: bool) -> None:
        """A call ended with no verdict (the caller gave up first): free the trial slot."""
        if trial:
            self._trial_running = False

    def _open(self, why: str) -> None:
        self._opened_at = self._clock()
        self._opened_after = self._failures
        self.times_opened += 1
        log.warning("tier %r: circuit open for %.1f s (%s)", self._tier, self._open_s, why)

    def refusal_if_open(self) -> BackendUnavailable | None:
        """The error a call gets now, or None while calls are let through."""
        if self.state == "open":
            return self._refusal()
        return None


def backoff_cap_s(cfg: RetryConfig, failed_attempts: int) -> float:
    """The longest pause after ``failed_attempts`` (≥ 1) failed calls: base · 2^(n-1), capped."""
    return min(cfg.max_delay_s, cfg.base_delay_s * 2.0 ** (failed_attempts - 1))


class ResilientBackend:
    """A ``Backend`` that retries retriable failures and keeps a per-tier circuit breaker.

    Only failures raised before the first event are retried. When every attempt failed
    (or no time is left for another) the call raises ``BackendUnavailable`` naming the
    attempts and the last cause; non-retriable errors pass through unchanged. ``clock``,
    ``sleep`` and ``rng`` are injectable for tests; the clock measures both the breaker's
    ``open_s`` and the caller's ``timeout_s`` across attempts.
    """

    def __init__(
        self,
        inner: Backend,
        cfg: TierConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._retry = cfg.retry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._breaker = CircuitBreaker(inner.tier, cfg.breaker, clock)
        self.retries = 0
        """Attempts made after a retriable failure, since the backend was built."""

    @property
    def inner(self) -> Backend:
        """The wrapped adapter."""
        return self._inner

    @property
    def tier(self) -> str:
        return self._inner.tier

    @property
    def max_n(self) -> int:
        return self._inner.max_n

    @property
    def state(self) -> BreakerState:
        """``closed`` (calls flow), ``open`` (calls refused) or ``half_open`` (one trial)."""
        return self._breaker.state

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def __repr__(self) -> str:
        return f"ResilientBackend({self._inner!r}, state={self.state!r})"

    def _attempt_request(self, request: SampleRequest, started: float) -> SampleRequest:
        if request.timeout_s is None:
            return request
        left = request.timeout_s - (self._clock() - started)
        return dataclasses.replace(request, timeout_s=left)

    def _gave_up(self, attempts: int, cause: BackendError, why: str) -> BackendUnavailable:
        log.warning(
            "tier %r: giving up, %s after %d attempts (%s)", self.tier, why, attempts, cause.message
        )
        return BackendUnavailable(
            f"tier {self.tier!r} is unavailable: {why} after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}; last error: {cause.message}"
        )

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """The inner stream, retried and guarded by the breaker (see the class docstring)."""
        if request.timeout_s is not None and request.timeout_s <= 0:
            raise BackendTimeout(f"tier {self.tier!r}: no time left for the call")
        started_at = self._clock()
        trial = self._breaker.admit()
        attempts = 0
        produced = False
        verdict = False
        try:
            while True:
                attempts += 1
                attempt = self._attempt_request(request, started_at)
                if attempt.timeout_s is not None and attempt.timeout_s <= 0:
                    raise BackendTimeout(
                        f"tier {self.tier!r}: the {request.timeout_s:.3g}s budget ran out "
                        f"after {attempts - 1} attempts"
                    )
                try:
                    async with aclosing(self._inner.stream(attempt)) as events:
                        async for event in events:
                            produced = True
                            yield event
                except BackendError as exc:
                    verdict = True
                    self._breaker.record_failure(trial)
                    trial = False
                    if produced or not exc.retriable:
                        raise
                    if attempts >= self._retry.max_attempts:
                        raise self._gave_up(attempts, exc, "retries used up") from exc
                    refusal = self._breaker.refusal_if_open()
                    if refusal is not None:
                        raise refusal from exc
                    delay = self._rng.uniform(0.0, backoff_cap_s(self._retry, attempts))
                    if request.timeout_s is not None:
                        left = request.timeout_s - (self._clock() - started_at)
                        if delay >= left:
                            raise self._gave_up(
                                attempts, exc, "no time left for another attempt"
                            ) from exc
                    log.info(
                        "tier %r: attempt %d of %d failed (%s); retrying in %.3f s",
                        self.tier,
                        attempts,
                        self._retry.max_attempts,
                        exc.message,
                        delay,
                    )
                    self.retries += 1
                    await self._sleep(delay)
                    verdict = False
                    trial = self._breaker.admit() if self._breaker.state != "closed" else False
                    continue
                verdict = True
                self._breaker.record_success(trial)
                return
        finally:
            if not verdict:
                # The caller stopped (closed the stream or was cancelled): output already
                # seen proves the tier answers; otherwise the call says nothing about it.
                if produced:
                    self._breaker.record_success(trial)
                else:
                    self._breaker.release(trial)

    async def ready(self) -> bool:
        """False while the breaker is open; otherwise whatever the adapter says."""
        if self._breaker.state == "open":
            return False
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()

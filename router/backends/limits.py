"""Time and concurrency limits shared by the backend adapters.

A call's budget is the smaller of the caller's time left (``SampleRequest.timeout_s``) and
the tier's ``timeout_s``; it bounds the whole call, including the wait for a concurrency
slot. Each await inside a streaming call is bounded by the same absolute deadline, so no
timeout scope ever spans a ``yield`` to the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from router.config.backends import TierConfig
from router.core.types import SampleRequest
from router.errors import BackendTimeout

T = TypeVar("T")


class CallLimits:
    """The deadline and the ``max_concurrency`` semaphore of one tier."""

    def __init__(self, tier: str, cfg: TierConfig) -> None:
        self._tier = tier
        self._timeout_s = cfg.timeout_s
        self._max_concurrency = cfg.max_concurrency
        self._slots = asyncio.Semaphore(cfg.max_concurrency)
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots currently taken (for tests and metrics)."""
        return self._in_use

    def budget_s(self, request: SampleRequest) -> float:
        """Seconds this call may take: the caller's time left, capped by the tier's timeout."""
        if request.timeout_s is None:
            return self._timeout_s
        return min(request.timeout_s, self._timeout_s)

    def deadline(self, request: SampleRequest) -> tuple[float, float]:
        """``(deadline on the loop clock, budget in seconds)``; no budget left is a timeout."""
        budget = self.budget_s(request)
        if budget <= 0:
            raise BackendTimeout(
                f"tier {self._tier!r}: no time left for the call (budget {budget:.3f}s)"
            )
        return asyncio.get_running_loop().time() + budget, budget

    @staticmethod
    def remaining(deadline: float) -> float:
        return max(0.0, deadline - asyncio.get_running_loop().time())

    async def within(self, deadline: float, budget: float, awaitable: Awaitable[T], what: str) -> T:
        """Await ``awaitable`` until ``deadline``; past it, raise ``BackendTimeout``."""
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            raise BackendTimeout(
                f"tier {self._tier!r}: {what} did not finish within the {budget:.3g}s budget"
            ) from None

    @asynccontextmanager
    async def slot(self, deadline: float, budget: float) -> AsyncIterator[None]:
        """Hold one of the tier's ``max_concurrency`` slots, waiting no later than ``deadline``."""
        await self.within(
            deadline,
            budget,
            self._slots.acquire(),
            f"waiting for a free slot (max_concurrency={self._max_concurrency})",
        )
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1
            self._slots.release()

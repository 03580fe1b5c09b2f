"""Test-time-compute strategies: how an arm spends compute on its backend.

A strategy is named in an arm after the slash (``greedy``, ``vote@5``). Strategies are small
registered classes; ``parse_strategy`` turns a name into an instance.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from router.core.protocols import Backend
from router.core.types import SampleRequest, SampleResult, StrategyResult, TextDelta
from router.errors import BackendError, InvalidRequest

Emit = Callable[[str], Awaitable[None]]

_NAME = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]*)(?:@(?P<k>\d+))?$")


class Strategy(ABC):
    """Runs one request on one backend and returns the answer and the summed usage."""

    kind: str = ""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def samples(self) -> int:
        """Upper bound on the samples this strategy asks of the backend (for reservations)."""

    @abstractmethod
    async def run(
        self,
        backend: Backend,
        prompt: str,
        *,
        max_tokens: int,
        timeout_s: float | None,
        emit: Emit,
    ) -> StrategyResult: ...


_REGISTRY: dict[str, Callable[[int | None], Strategy]] = {}


def register(kind: str, factory: Callable[[int | None], Strategy]) -> None:
    _REGISTRY[kind] = factory


def parse_strategy(name: str) -> Strategy:
    m = _NAME.match(name)
    if m is None or m.group("kind") not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidRequest(f"unknown strategy {name!r}; known strategies: {known}")
    k = m.group("k")
    return _REGISTRY[m.group("kind")](int(k) if k is not None else None)


async def collect_sample(
    backend: Backend, request: SampleRequest, emit: Emit | None = None
) -> SampleResult:
    """Run one sample to completion, forwarding deltas to ``emit`` when given."""
    result: SampleResult | None = None
    # aclosing: a cancelled caller frees the backend's slot and server stream at once.
    async with contextlib.aclosing(backend.stream(request)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                if emit is not None and event.text:
                    await emit(event.text)
            else:
                result = event
    if result is None:
        raise BackendError(f"tier {backend.tier!r} ended its stream without a final result")
    return result

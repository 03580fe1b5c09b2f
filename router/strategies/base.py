"""Test-time-compute strategies: how an arm spends compute on its backend.

A strategy is named in an arm after the slash (``greedy``, ``vote@5``). Strategies are small
registered classes; ``parse_strategy`` turns a name and the arm's options (``strategy_options``
in backends.yaml) into an instance, and rejects options it does not know.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.core.protocols import Backend
from router.core.types import Price, SampleRequest, SampleResult, StrategyResult, TextDelta
from router.errors import BackendError, InvalidRequest

Emit = Callable[[str], Awaitable[None]]
Options = Mapping[str, Any]

_NAME = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]*)(?:@(?P<k>\d+))?$")


@dataclass(frozen=True)
class RunContext:
    """Everything one strategy run may use.

    ``backend`` is the arm's own tier; ``backends`` holds every configured tier by name, for
    strategies that span tiers (``escalate``). ``max_tokens`` caps each sample's output;
    ``timeout_s`` is the time left before the caller's deadline (None: no deadline).
    ``emit`` streams answer text to the caller; a strategy that must see all samples
    before it knows its answer emits the answer once, at the end.
    """

    backend: Backend
    prompt: str
    max_tokens: int
    timeout_s: float | None
    emit: Emit
    backends: Mapping[str, Backend] = field(default_factory=dict)

    @property
    def tier(self) -> str:
        return self.backend.tier


PriceOf = Callable[[str], Price]
"""Price of a tier by name (USD per million tokens)."""


class Strategy(ABC):
    """Runs one request on one backend and returns the answer and the summed usage."""

    kind: str = ""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def samples(self) -> int:
        """Upper bound on the samples this strategy asks of its own tier."""

    @abstractmethod
    async def run(self, ctx: RunContext) -> StrategyResult: ...

    def reservation_micros(
        self, tier: str, price_of: PriceOf, input_tokens_upper: int, max_tokens: int
    ) -> int:
        """A true upper bound on what one run can cost, in micro-dollars.

        The default is ``samples`` calls of at most ``input_tokens_upper`` in and
        ``max_tokens`` out on the arm's tier; strategies that feed output back as input or
        use other tiers override it.
        """
        return self.samples * price_of(tier).micros(input_tokens_upper, max_tokens)

    def tiers_used(self, tier: str) -> tuple[str, ...]:
        """Tiers a run may call, the arm's own first (checked against backends.yaml)."""
        return (tier,)

    async def aclose(self) -> None:
        """Free clients the strategy holds (scorer connections); called at shutdown."""
        return None


Factory = Callable[[int | None, Options], Strategy]

_REGISTRY: dict[str, Factory] = {}


def register(kind: str, factory: Factory) -> None:
    _REGISTRY[kind] = factory


def known_strategies() -> list[str]:
    return sorted(_REGISTRY)


def parse_strategy(name: str, options: Options | None = None) -> Strategy:
    """The strategy ``name`` (``kind`` or ``kind@k``) configured with ``options``.

    Raises ``InvalidRequest`` naming the problem for an unknown kind, a bad ``k`` or an
    unknown or invalid option.
    """
    m = _NAME.match(name)
    if m is None or m.group("kind") not in _REGISTRY:
        known = ", ".join(known_strategies())
        raise InvalidRequest(f"unknown strategy {name!r}; known strategies: {known}")
    k = m.group("k")
    return _REGISTRY[m.group("kind")](int(k) if k is not None else None, dict(options or {}))


def check_options(
    kind: str, options: Options, allowed: Mapping[str, type | tuple[type, ...]]
) -> None:
    """Reject options a strategy does not know or whose value has the wrong type."""
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequest(
                f"strategy {kind!r} has no option {key!r}; its options are: {names}"
            )
        want = allowed[key]
        if isinstance(value, bool) and want in (int, float, (int, float)):
            raise InvalidRequest(f"strategy {kind!r}: option {key!r} must be a number")
        if not isinstance(value, want):
            wanted = want.__name__ if isinstance(want, type) else "/".join(t.__name__ for t in want)
            raise InvalidRequest(
                f"strategy {kind!r}: option {key!r} must be of type {wanted}, "
                f"got {type(value).__name__}"
            )


async def collect_sample(
    backend: Backend, request: SampleRequest, emit: Emit | None = None
) -> SampleResult:
    """Run one sample (``request.n`` must be 1) to completion, forwarding deltas to ``emit``."""
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

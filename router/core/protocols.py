"""The small interfaces `router/core` talks to. Adapters elsewhere implement them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from router.core.types import (
    Prediction,
    Reservation,
    SampleRequest,
    SampleResult,
    TextDelta,
    WindowState,
)


@runtime_checkable
class Embedder(Protocol):
    """Turns a prompt into an L2-normalised float32 vector of length ``dim``."""

    @property
    def dim(self) -> int: ...

    async def embed(self, text: str) -> NDArray[np.float32]: ...


@runtime_checkable
class Predictor(Protocol):
    """Per-arm success probability and output-token estimates for one prompt."""

    @property
    def version(self) -> str: ...

    @property
    def arms(self) -> Sequence[str]: ...

    def predict(self, embedding: NDArray[np.float32], prompt: str) -> Prediction: ...


@dataclass(frozen=True)
class LedgerState:
    """A tenant's budget windows and its pacing price, as one read of the ledger saw them.

    ``pacing_lambda_per_usd`` is the shadow price (quality points per USD) that the ledger
    raises while the tenant spends ahead of its windows' even pace; the policy adds it to the
    tenant's own λ. ``stale`` is True when the store could not be reached and this is the last
    state seen.
    """

    windows: tuple[WindowState, ...]
    pacing_lambda_per_usd: float = 0.0
    stale: bool = False

    @property
    def remaining_micros(self) -> int | None:
        """The least any window has left, or None when no window is capped."""
        return min((w.remaining_micros for w in self.windows), default=None)


@runtime_checkable
class Ledger(Protocol):
    """Per-tenant budget ledger. Amounts are integer micro-dollars.

    ``caps`` maps a window name (``hourly``, ``daily``, ``weekly``, ``monthly``) to its cap;
    windows are calendar-aligned in the IANA time zone ``tz``. ``reserve`` raises
    ``BudgetExceeded`` when any window cannot cover ``amount_micros`` and ``LedgerUnavailable``
    when the store cannot be reached, unless ``fail_open_micros`` is given: then it admits the
    hold locally while this replica's unrecorded spend for the tenant stays within that
    allowance. It is idempotent on request_id. ``settle`` keeps a charge it cannot write and
    writes it when the store answers again.
    """

    async def reserve(
        self,
        tenant: str,
        request_id: str,
        amount_micros: int,
        caps: Mapping[str, int],
        hold_ttl_s: float,
        *,
        tz: str = "UTC",
        fail_open_micros: int | None = None,
    ) -> Reservation: ...

    async def settle(
        self,
        tenant: str,
        request_id: str,
        actual_micros: int,
        audit: Mapping[str, str],
        *,
        tz: str = "UTC",
    ) -> tuple[WindowState, ...]: ...

    async def release(self, tenant: str, request_id: str) -> None: ...

    async def windows(
        self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC"
    ) -> tuple[WindowState, ...]: ...

    async def state(
        self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC"
    ) -> LedgerState: ...

    async def ping(self) -> bool: ...


@runtime_checkable
class Backend(Protocol):
    """One model tier. ``stream`` yields text deltas and ends with one ``SampleResult`` per
    sample asked for (``request.n`` of them, each tagged with its ``index``).

    ``max_n`` is the most samples one request may ask for (1 when the server cannot return
    several choices per request). Closing the generator early cancels the request on the
    server. Failures raise ``BackendError`` (``BackendTimeout``, ``BackendUnavailable``);
    nothing else escapes.
    """

    @property
    def tier(self) -> str: ...

    @property
    def max_n(self) -> int: ...

    def stream(self, request: SampleRequest) -> AsyncGenerator[TextDelta | SampleResult, None]: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class OutcomeSink(Protocol):
    """Durable log of decisions and of the scores that arrive for them later."""

    async def write_decision(self, record: Mapping[str, Any]) -> None: ...

    async def write_score(self, decision_id: str, tenant: str, score: float) -> None: ...


@dataclass(frozen=True)
class RememberedDecision:
    """What ``RecordOutcome`` needs to know about a decision: its tenant, the arm that ran,
    and what the predictor expected of that arm (None for decisions remembered without it)."""

    tenant: str
    arm: str
    p_success: float | None = None
    predicted_cost_usd: float | None = None


@runtime_checkable
class DecisionIndex(Protocol):
    """Remembers each decision's tenant, arm and predictions, for ``RecordOutcome``.

    ``remember`` overwrites an earlier entry of the same id (a request that moved to another
    arm); ``lookup`` answers None for an unknown or expired id.
    """

    async def remember(
        self,
        decision_id: str,
        tenant: str,
        arm: str,
        *,
        p_success: float,
        predicted_cost_usd: float,
    ) -> None: ...

    async def lookup(self, decision_id: str) -> RememberedDecision | None: ...

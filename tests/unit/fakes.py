"""In-memory stand-ins for the core's protocols, for unit tests of logic only."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router.config.backends import BackendsConfig
from router.config.tenants import TenantConfig, hash_api_key
from router.core.catalog import Catalog
from router.core.protocols import LedgerState, RememberedDecision
from router.core.service import RouterCore, Tenant
from router.core.types import (
    ArmPrediction,
    Prediction,
    Reservation,
    SampleRequest,
    SampleResult,
    TextDelta,
    WindowState,
)
from router.errors import BackendError, BudgetExceeded, LedgerUnavailable, QuotaViolation


class FakeEmbedder:
    dim = 4

    async def embed(self, text: str) -> NDArray[np.float32]:
        return np.ones(4, dtype=np.float32) / 2


class FakePredictor:
    version = "fake-1"

    def __init__(self, table: Mapping[str, ArmPrediction]) -> None:
        self.table = dict(table)

    @property
    def arms(self) -> Sequence[str]:
        return list(self.table)

    def predict(self, embedding: NDArray[np.float32], prompt: str) -> Prediction:
        return Prediction(self.version, self.table)


class MemoryLedger:
    """Same contract as the Redis ledger, single process, no expiry, no pacing."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}
        self.holds: dict[tuple[str, str], int] = {}
        self.settled: dict[tuple[str, str], int] = {}
        self.pacing_lambda: dict[str, float] = {}
        self.down = False

    def _check_up(self) -> None:
        if self.down:
            raise LedgerUnavailable("memory ledger is down")

    def _state(self, tenant: str, caps: Mapping[str, int]) -> tuple[WindowState, ...]:
        now = datetime.now(UTC)
        held = sum(v for (t, _), v in self.holds.items() if t == tenant)
        return tuple(
            WindowState(w, now, now + timedelta(days=1), cap, self.spent.get(tenant, 0), held)
            for w, cap in caps.items()
        )

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
    ) -> Reservation:
        self._check_up()
        if (tenant, request_id) in self.holds or (tenant, request_id) in self.settled:
            return Reservation(
                tenant,
                request_id,
                self.holds.get((tenant, request_id), 0),
                self._state(tenant, caps),
                True,
            )
        for w in self._state(tenant, caps):
            if amount_micros > w.remaining_micros:
                raise BudgetExceeded("over", [QuotaViolation(f"tenant:{tenant}/{w.window}", "x")])
        self.holds[(tenant, request_id)] = amount_micros
        return Reservation(tenant, request_id, amount_micros, self._state(tenant, caps))

    async def settle(
        self,
        tenant: str,
        request_id: str,
        actual_micros: int,
        audit: Mapping[str, str],
        *,
        tz: str = "UTC",
    ) -> tuple[WindowState, ...]:
        self._check_up()
        self.holds.pop((tenant, request_id), None)
        if (tenant, request_id) not in self.settled:
            self.settled[(tenant, request_id)] = actual_micros
            self.spent[tenant] = self.spent.get(tenant, 0) + actual_micros
        return self._state(tenant, {"daily": 10**12})

    async def release(self, tenant: str, request_id: str) -> None:
        self._check_up()
        self.holds.pop((tenant, request_id), None)

    async def windows(
        self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC"
    ) -> tuple[WindowState, ...]:
        self._check_up()
        return self._state(tenant, caps)

    async def state(self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC") -> LedgerState:
        self._check_up()
        return LedgerState(self._state(tenant, caps), self.pacing_lambda.get(tenant, 0.0))

    async def ping(self) -> bool:
        return not self.down


class ScriptedBackend:
    """Streams ``text`` word by word; can fail after ``fail_after`` deltas or stall."""

    def __init__(
        self,
        tier: str,
        text: str = "17 * 23 = 391",
        *,
        fail_after: int | None = None,
        stall: bool = False,
    ) -> None:
        self._tier = tier
        self.text = text
        self.fail_after = fail_after
        self.stall = stall
        self.requests: list[SampleRequest] = []

    @property
    def tier(self) -> str:
        return self._tier

    @property
    def max_n(self) -> int:
        return 1

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        self.requests.append(request)
        words = self.text.split(" ")
        for i, w in enumerate(words):
            if self.fail_after is not None and i >= self.fail_after:
                raise BackendError(f"tier {self._tier!r}: connection lost mid-stream")
            if self.stall:
                await asyncio.sleep(3600)
            yield TextDelta(w if i == 0 else " " + w)
        yield SampleResult(self.text, 10, len(words))

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class ListSink:
    def __init__(self) -> None:
        self.decisions: list[dict[str, Any]] = []
        self.scores: list[tuple[str, str, float]] = []

    async def write_decision(self, record: Mapping[str, Any]) -> None:
        self.decisions.append(dict(record))

    async def write_score(self, decision_id: str, tenant: str, score: float) -> None:
        self.scores.append((decision_id, tenant, score))


class DictIndex:
    def __init__(self) -> None:
        self.entries: dict[str, RememberedDecision] = {}

    @property
    def owners(self) -> dict[str, str]:
        return {k: v.tenant for k, v in self.entries.items()}

    async def remember(
        self,
        decision_id: str,
        tenant: str,
        arm: str,
        *,
        p_success: float,
        predicted_cost_usd: float,
    ) -> None:
        self.entries[decision_id] = RememberedDecision(tenant, arm, p_success, predicted_cost_usd)

    async def lookup(self, decision_id: str) -> RememberedDecision | None:
        return self.entries.get(decision_id)


BACKENDS = BackendsConfig.model_validate(
    {
        "tiers": {
            "small": {
                "protocol": "triton",
                "endpoint": "x:1",
                "model": "s",
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
            },
            "big": {
                "protocol": "openai",
                "endpoint": "http://x",
                "model": "b",
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            },
        },
        "arms": ["small/greedy", "small/vote@3", "big/greedy"],
    }
)
PREDICTIONS = {
    "small/greedy": ArmPrediction(0.5, 20, 40),
    "small/vote@3": ArmPrediction(0.6, 20, 40),
    "big/greedy": ArmPrediction(0.9, 20, 40),
}


def tenant(
    name: str = "acme",
    cap_usd: float = 1.0,
    lam: float = 0.0,
    arms: list[str] | None = None,
    exploration: float = 0.0,
) -> Tenant:
    """A test tenant; no exploration unless asked, so the policy's choice is deterministic."""
    return Tenant(
        name,
        TenantConfig(
            api_key_sha256=hash_api_key(name),
            daily_cap_usd=cap_usd,
            lambda_per_usd=lam,
            allowed_arms=arms or ["*"],
            exploration=exploration,
        ),
    )


def make_core(backends: Mapping[str, Any] | None = None) -> RouterCore:
    predictor = FakePredictor(PREDICTIONS)
    return RouterCore(
        embedder=FakeEmbedder(),
        predictor=predictor,
        ledger=MemoryLedger(),
        backends=backends or {"small": ScriptedBackend("small"), "big": ScriptedBackend("big")},
        catalog=Catalog.build(BACKENDS, predictor.arms),
        sink=ListSink(),
        decisions=DictIndex(),
        count_tokens=lambda s: len(s.split()),
        rng=random.Random(0),
    )

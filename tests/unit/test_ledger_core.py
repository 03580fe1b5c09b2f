"""How the request flow uses the ledger: pacing λ, refusals decided by the ledger, the
per-request cap, failure policies; and the replica's outage bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from router.config.backends import BackendsConfig
from router.config.tenants import TenantConfig, hash_api_key
from router.core.catalog import Catalog
from router.core.protocols import LedgerState
from router.core.service import GenerateResult, Hints, RouterCore, Tenant
from router.core.types import Reservation, WindowState
from router.errors import BudgetExceeded, LedgerUnavailable
from router.ledger.outage import OutageBook, PendingCharge
from tests.unit.fakes import BACKENDS, MemoryLedger, make_core


def paced_tenant(pacing: bool = True, **kw: Any) -> Tenant:
    cfg = TenantConfig(
        api_key_sha256=hash_api_key("acme"),
        daily_cap_usd=1.0,
        lambda_per_usd=0.0,
        pacing=pacing,
        **kw,
    )
    return Tenant("acme", cfg)


async def run(core: RouterCore, tenant: Tenant, prompt: str = "What is 17*23?") -> GenerateResult:
    last = None
    async for item in core.generate(tenant, prompt, Hints()):
        last = item
    assert isinstance(last, GenerateResult)
    return last


async def test_pacing_lambda_moves_a_tenant_to_cheaper_arms() -> None:
    core = make_core()
    ledger = core.ledger
    assert isinstance(ledger, MemoryLedger)
    assert (await run(core, paced_tenant())).decision.arm == "big/greedy"
    ledger.pacing_lambda["acme"] = 10_000.0
    assert (await run(core, paced_tenant())).decision.arm == "small/greedy"
    # a tenant without pacing keeps its own λ
    assert (await run(core, paced_tenant(pacing=False))).decision.arm == "big/greedy"
    view = await core.budget_view(paced_tenant())
    assert (view.lambda_per_usd, view.pacing_lambda_per_usd) == (10_000.0, 10_000.0)


async def test_per_request_cap_excludes_dear_arms() -> None:
    core = make_core()
    # big/greedy reserves more than $0.0001 for this prompt; small arms do not
    res = await run(core, paced_tenant(max_request_usd=0.0001))
    assert res.decision.arm.startswith("small/")


class StaleLedger(MemoryLedger):
    """Reports the budget as used up, while reserve (the ledger's real word) admits."""

    async def state(self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC") -> LedgerState:
        full = tuple(replace(w, spent_micros=w.cap_micros) for w in self._state(tenant, caps))
        return LedgerState(full)


async def test_a_stale_read_does_not_refuse_when_the_ledger_would_admit() -> None:
    core = make_core()
    core.ledger = StaleLedger()
    res = await run(core, paced_tenant())
    cheapest = min(res.decision.candidates, key=lambda v: v.candidate.reserved_cost_micros)
    assert res.decision.arm == cheapest.candidate.arm


class PickyLedger(MemoryLedger):
    """Refuses any reservation above ``limit``, like a ledger with little money left."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.asked: list[int] = []

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
        self.asked.append(amount_micros)
        if amount_micros > self.limit:
            raise BudgetExceeded("over")
        return await super().reserve(tenant, request_id, amount_micros, caps, hold_ttl_s)


async def test_a_refused_reservation_falls_back_to_the_cheapest_arm_once() -> None:
    core = make_core()
    cheapest = 0
    async for item in core.generate(paced_tenant(), "What is 17*23?", Hints()):
        if isinstance(item, GenerateResult):
            cheapest = min(v.candidate.reserved_cost_micros for v in item.decision.candidates)
    core.ledger = PickyLedger(cheapest)
    res = await run(core, paced_tenant())
    assert res.decision.chosen.reserved_cost_micros == cheapest
    assert core.ledger.asked[-1] == cheapest and len(core.ledger.asked) == 2
    core.ledger = PickyLedger(cheapest - 1)
    with pytest.raises(BudgetExceeded):
        await run(core, paced_tenant())
    assert len(core.ledger.asked) == 2  # the chosen arm, then the cheapest: no more


class RecordingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.allowances: list[int | None] = []
        self.zones: list[str] = []

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
        self.allowances.append(fail_open_micros)
        self.zones.append(tz)
        return await super().reserve(tenant, request_id, amount_micros, caps, hold_ttl_s)


async def test_fail_open_tiers_pass_their_allowance_and_the_tenant_zone() -> None:
    doc = BACKENDS.model_dump()
    doc["tiers"]["small"]["failure_policy"] = "fail_open"
    doc["tiers"]["small"]["fail_open_allowance_usd"] = 0.25
    core = make_core()
    core.catalog = Catalog.build(BackendsConfig.model_validate(doc), core.predictor.arms)
    core.ledger = RecordingLedger()
    t = paced_tenant(timezone="Asia/Tokyo")
    for arm in ("small/greedy", "big/greedy"):
        async for _ in core.generate(t, "What is 17*23?", Hints(arms=(arm,))):
            pass
    assert core.ledger.allowances == [250_000, None]
    assert core.ledger.zones == ["Asia/Tokyo", "Asia/Tokyo"]


async def test_an_unreachable_ledger_is_unavailable_on_a_fail_closed_tier() -> None:
    core = make_core()
    assert isinstance(core.ledger, MemoryLedger)
    core.ledger.down = True
    with pytest.raises(LedgerUnavailable):
        await run(core, paced_tenant())


def charge(rid: str, micros: int, local: bool = True) -> PendingCharge:
    return PendingCharge("acme", rid, micros, {}, "UTC", 0.0, local)


def test_outage_book_admits_within_the_allowance_and_gives_it_back() -> None:
    book = OutageBook()
    assert book.admit("acme", "a", 60, allowance=100)
    assert book.admit("acme", "a", 60, allowance=100)  # a retry holds once
    assert not book.admit("acme", "b", 50, allowance=100)
    assert book.admit("other", "b", 50, allowance=100)  # per tenant
    book.record(charge("a", 20))
    assert book.used["acme"] == 20 and not book.is_local("acme", "a")
    assert book.admit("acme", "c", 80, allowance=100)
    book.release_local("acme", "c")
    assert book.used["acme"] == 20
    book.written(book.pending[0])
    assert book.used["acme"] == 0 and book.pending == []


def test_windows_remaining_is_the_least_window() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    state = LedgerState(
        (WindowState("hourly", now, now, 10, 4, 1), WindowState("daily", now, now, 100, 4, 1))
    )
    assert state.remaining_micros == 5
    assert LedgerState(()).remaining_micros is None


def test_a_charge_written_twice_gives_its_allowance_back_once() -> None:
    book = OutageBook()
    assert book.admit("acme", "a", 50, allowance=100)
    assert book.admit("acme", "b", 50, allowance=100)
    c = charge("a", 30)
    book.record(c)
    book.record(charge("b", 40))
    book.written(c)
    book.written(c)  # two reconciles raced: the second finds nothing to do
    assert book.used["acme"] == 40 and len(book.pending) == 1

"""The request flow of RouterCore with in-memory fakes: every path settles or releases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.core.service import Delta, GenerateResult, Hints, RouterCore
from router.errors import (
    BackendError,
    BudgetExceeded,
    Conflict,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UnknownArm,
)
from tests.unit.fakes import ListSink, MemoryLedger, ScriptedBackend, make_core, tenant


async def run(core: RouterCore, prompt: str, **kw: Any) -> tuple[str, GenerateResult]:
    text = ""
    final = None
    async for ev in core.generate(
        kw.pop("tenant", tenant()), prompt, kw.pop("hints", Hints()), **kw
    ):
        if isinstance(ev, Delta):
            text += ev.text
        else:
            final = ev
    assert final is not None
    return text, final


def ledger(core: RouterCore) -> MemoryLedger:
    assert isinstance(core.ledger, MemoryLedger)
    return core.ledger


def sink(core: RouterCore) -> ListSink:
    assert isinstance(core.sink, ListSink)
    return core.sink


async def test_generate_streams_settles_and_records() -> None:
    core = make_core()
    text, final = await run(core, "What is 17*23?")
    assert text == "17 * 23 = 391" == final.answer
    assert final.decision.arm == "big/greedy"  # λ=0: best predicted quality
    # 10 input tokens at 2.5 µ$ + 5 output tokens at 10 µ$
    assert final.cost_micros == 75
    assert ledger(core).spent["acme"] == 75
    assert ledger(core).holds == {}
    [rec] = sink(core).decisions
    assert rec["arm"] == "big/greedy" and rec["cost_usd"] == pytest.approx(75e-6)
    assert rec["error"] is None and rec["score"] is None
    assert rec["samples"] == 1 and rec["usage_estimated"] is False and rec["detail"] == {}
    assert rec["fallback_from"] is None and rec["fallback_reason"] is None
    assert rec["partial_output_tokens"] == 0 and "usage_by_tier" not in rec
    assert final.decision.fallback_from is None
    assert final.cost_micros <= final.decision.chosen.reserved_cost_micros


async def test_vote_runs_k_samples_and_charges_all() -> None:
    core = make_core()
    _, final = await run(core, "What is 17*23?", hints=Hints(arms=("small/vote@3",)))
    assert final.samples == 3
    small = core.backends["small"]
    assert isinstance(small, ScriptedBackend)
    assert sorted(r.seed for r in small.requests) == [0, 1, 2]
    assert final.cost_micros == core.catalog.get("small/vote@3").tier.price.to_price().micros(
        30, 15
    )


async def test_backend_failure_mid_stream_releases_hold_and_records_error() -> None:
    core = make_core(
        {"small": ScriptedBackend("small"), "big": ScriptedBackend("big", fail_after=2)}
    )
    got: list[str] = []
    with pytest.raises(BackendError):
        async for ev in core.generate(tenant(), "hello there", Hints()):
            if isinstance(ev, Delta):
                got.append(ev.text)
    assert got == ["17", " *"]
    assert ledger(core).holds == {} and ledger(core).spent == {}
    [rec] = sink(core).decisions
    assert rec["error"].startswith("BackendError")
    # a plain BackendError is not a tier outage: no fallback, even before any output
    core = make_core(
        {"small": ScriptedBackend("small"), "big": ScriptedBackend("big", fail_after=0)}
    )
    with pytest.raises(BackendError):
        await run(core, "hello there")
    assert ledger(core).holds == {} and ledger(core).spent == {}
    [rec] = sink(core).decisions
    assert rec["arm"] == "big/greedy" and rec["fallback_from"] is None


async def test_deadline_releases_hold() -> None:
    core = make_core({"small": ScriptedBackend("small"), "big": ScriptedBackend("big", stall=True)})
    with pytest.raises(DeadlineExceeded):
        await run(core, "hello", timeout_s=0.2)
    assert ledger(core).holds == {}
    assert sink(core).decisions[0]["error"].startswith("DeadlineExceeded")


async def test_client_cancellation_releases_hold() -> None:
    core = make_core({"small": ScriptedBackend("small"), "big": ScriptedBackend("big", stall=True)})
    task = asyncio.create_task(run(core, "hello"))
    await asyncio.sleep(0.05)
    assert ledger(core).holds  # the hold exists while the backend works
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger(core).holds == {}
    assert sink(core).decisions[0]["error"] == "cancelled"


async def test_tenant_at_cap_is_refused_and_charged_nothing() -> None:
    core = make_core()
    poor = tenant(cap_usd=0.000001)
    with pytest.raises(BudgetExceeded):
        await run(core, "hello", tenant=poor)
    assert ledger(core).spent == {} and ledger(core).holds == {}


async def test_budget_moves_to_cheaper_arm() -> None:
    core = make_core()
    big = core.catalog.get("big/greedy")
    # enough for the small arm's reservation, not for the big one's
    _, final = await run(core, "hello", tenant=tenant(cap_usd=0.0005))
    assert final.decision.arm != big.name


@pytest.mark.parametrize(
    ("prompt", "hints", "err"),
    [
        ("", Hints(), InvalidRequest),
        ("   ", Hints(), InvalidRequest),
        ("x" * 40_000, Hints(), InvalidRequest),
        ("hi", Hints(arms=("nope/greedy",)), UnknownArm),
        ("hi", Hints(min_quality=1.5), InvalidRequest),
        ("hi", Hints(max_cost_usd=0), InvalidRequest),
    ],
)
async def test_bad_requests_are_refused_before_any_spend(
    prompt: str, hints: Hints, err: type[Exception]
) -> None:
    core = make_core()
    with pytest.raises(err):
        await run(core, prompt, hints=hints)
    assert ledger(core).holds == {} and sink(core).decisions == []


async def test_arm_not_allowed_for_tenant() -> None:
    core = make_core()
    with pytest.raises(PermissionDenied):
        await run(
            core, "hi", tenant=tenant(arms=["small/greedy"]), hints=Hints(arms=("big/greedy",))
        )


async def test_route_reserves_only_when_asked() -> None:
    core = make_core()
    r = await core.route(tenant(), "hi", Hints(), reserve=False)
    assert not r.reserved and ledger(core).holds == {}
    r = await core.route(tenant(), "hi", Hints(), reserve=True, request_id="req-1")
    assert r.reserved and ledger(core).holds == {
        ("acme", "req-1"): r.decision.chosen.reserved_cost_micros
    }


async def test_record_outcome_checks_owner() -> None:
    core = make_core()
    _, final = await run(core, "hi")
    did = final.decision.decision_id
    await core.record_outcome(tenant(), did, 1.0)
    assert sink(core).scores == [(did, "acme", 1.0)]
    with pytest.raises(PermissionDenied):
        await core.record_outcome(tenant("globex"), did, 1.0)
    with pytest.raises(NotFound):
        await core.record_outcome(tenant(), "missing", 1.0)
    with pytest.raises(InvalidRequest):
        await core.record_outcome(tenant(), did, 2.0)


async def test_a_reused_request_id_is_refused_without_touching_the_first_hold() -> None:
    core = make_core()
    _, first = await run(core, "What is 17*23?", request_id="req-7")
    spent = ledger(core).spent["acme"]
    with pytest.raises(Conflict, match="req-7"):
        await run(core, "What is 17*23?", request_id="req-7")
    assert ledger(core).spent["acme"] == spent and ledger(core).holds == {}
    # while the first is still running, a retry must not release its hold either
    slow = make_core({"small": ScriptedBackend("small"), "big": ScriptedBackend("big", stall=True)})
    task = asyncio.create_task(run(slow, "hello", request_id="req-8"))
    await asyncio.sleep(0.05)
    with pytest.raises(Conflict):
        await run(slow, "hello", request_id="req-8")
    assert ("acme", "req-8") in ledger(slow).holds
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.cost_micros > 0


async def test_an_overlong_request_id_is_invalid_before_anything_is_spent() -> None:
    from router.errors import InvalidRequest

    core = make_core()
    with pytest.raises(InvalidRequest, match="request_id has 129 characters; the limit is 128"):
        async for _ in core.generate(tenant(), "What is 17*23?", Hints(), request_id="r" * 129):
            pass
    assert ledger(core).holds == {} and ledger(core).spent == {}
    assert core.sink.decisions == []  # type: ignore[attr-defined]


class _SlowToStop(ScriptedBackend):
    """Stalls; when cancelled, takes ``close_s`` to close (an HTTP stream being torn down)."""

    def __init__(self, tier: str, close_s: float) -> None:
        super().__init__(tier, stall=True)
        self.close_s = close_s

    async def stream(self, request: Any) -> Any:  # type: ignore[override]
        try:
            async for item in super().stream(request):
                yield item
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(self.close_s))
            raise


async def test_a_second_cancellation_during_clean_up_still_releases_and_records() -> None:
    """The caller's deadline and the request's own can fire together: the request is
    cancelled again while its clean-up waits for the backend to stop. The hold must still
    be released and the record written."""
    core = make_core({"small": ScriptedBackend("small"), "big": _SlowToStop("big", 0.2)})
    task = asyncio.create_task(run(core, "hello"))
    await asyncio.sleep(0.05)
    assert ledger(core).holds
    task.cancel()
    await asyncio.sleep(0.05)  # the clean-up is now waiting for the backend to stop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if sink(core).decisions:
            break
        await asyncio.sleep(0.01)
    assert ledger(core).holds == {}
    assert [d["error"] for d in sink(core).decisions] == ["cancelled"]

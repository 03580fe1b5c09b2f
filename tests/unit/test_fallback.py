"""Tier fallback and spend accounting in RouterCore.generate, with in-memory fakes.

Tiers ``local`` → ``mid`` → ``top`` form one fallback chain. A tier that is down raises
``BackendUnavailable`` the way ``ResilientBackend`` does once its breaker is open or its
retries are used up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

from router.api.convert import final_to_pb
from router.config.backends import BackendsConfig
from router.core.catalog import ArmSpec, Catalog
from router.core.service import Delta, GenerateResult, Hints, RouterCore, Tenant
from router.core.types import (
    Arm,
    ArmPrediction,
    Reservation,
    SampleRequest,
    SampleResult,
    StrategyResult,
    TextDelta,
    TierUsage,
)
from router.errors import BackendError, BackendUnavailable, BudgetExceeded, Conflict
from router.strategies.base import RunContext, Strategy, collect_sample
from tests.unit.fakes import (
    DictIndex,
    FakeEmbedder,
    FakePredictor,
    ListSink,
    MemoryLedger,
    ScriptedBackend,
    tenant,
)

PROMPT = "What is 17*23?"
ANSWER = "17 * 23 = 391"  # ScriptedBackend: 10 input tokens, 5 output tokens per sample

CONFIG = BackendsConfig.model_validate(
    {
        "tiers": {
            "local": {
                "protocol": "triton",
                "endpoint": "x:1",
                "model": "l",
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                "fallback": "mid",
            },
            "mid": {
                "protocol": "openai",
                "endpoint": "http://x",
                "model": "m",
                "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                "fallback": "top",
            },
            "top": {
                "protocol": "openai",
                "endpoint": "http://y",
                "model": "t",
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
            },
        },
        "arms": ["local/greedy", "local/vote@3", "mid/greedy", "mid/vote@3", "top/greedy"],
    }
)


class DownBackend:
    """A tier that is down: every call raises ``error`` (after ``text``, when given)."""

    def __init__(
        self,
        tier: str,
        *,
        text: str | None = None,
        partial_output_tokens: int = 0,
        error: type[BackendError] = BackendUnavailable,
    ) -> None:
        self._tier = tier
        self.text = text
        self.partial_output_tokens = partial_output_tokens
        self.error = error
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
        if self.text is not None:
            yield TextDelta(self.text)
        raise self.error(
            f"tier {self._tier!r} is unavailable: retries used up after 2 attempts",
            partial_output_tokens=self.partial_output_tokens,
        )

    async def ready(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class LoggingLedger(MemoryLedger):
    """Remembers, for every reservation asked for, which holds were live at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, frozenset[str]]] = []

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
        self.asked.append((request_id, frozenset(rid for (_, rid) in self.holds)))
        return await super().reserve(
            tenant,
            request_id,
            amount_micros,
            caps,
            hold_ttl_s,
            tz=tz,
            fail_open_micros=fail_open_micros,
        )


class SpreadStrategy(Strategy):
    """One sample on the arm's tier and one on ``top``; reports usage per tier."""

    kind = "spread"

    @property
    def name(self) -> str:
        return "spread"

    @property
    def samples(self) -> int:
        return 2

    def tiers_used(self, tier: str) -> tuple[str, ...]:
        return (tier, "top")

    async def run(self, ctx: RunContext) -> StrategyResult:
        req = SampleRequest(prompt=ctx.prompt, max_tokens=ctx.max_tokens)
        own = await collect_sample(ctx.backend, req)
        other = await collect_sample(ctx.backends["top"], req)
        await ctx.emit(other.text)
        return StrategyResult(
            other.text,
            own.input_tokens + other.input_tokens,
            own.output_tokens + other.output_tokens,
            2,
            usage=(
                TierUsage(ctx.tier, own.input_tokens, own.output_tokens, 1),
                TierUsage("top", other.input_tokens, other.output_tokens, 1),
            ),
            detail={"escalated": True, "agreement": 0.5, "votes": 2, "winner": "top"},
            usage_estimated=True,
        )


def predictions(catalog: Catalog) -> dict[str, ArmPrediction]:
    return {name: ArmPrediction(0.5, 20, 40) for name in catalog.names}


def make_core(
    backends: Mapping[str, Any],
    *,
    extra: tuple[ArmSpec, ...] = (),
    ledger: MemoryLedger | None = None,
) -> RouterCore:
    base = Catalog.build(CONFIG, CONFIG.arms)
    catalog = Catalog([*base, *extra], CONFIG.tiers)
    return RouterCore(
        embedder=FakeEmbedder(),
        predictor=FakePredictor(predictions(catalog)),
        ledger=ledger or LoggingLedger(),
        backends=backends,
        catalog=catalog,
        sink=ListSink(),
        decisions=DictIndex(),
        count_tokens=lambda s: len(s.split()),
    )


def backends(**down: DownBackend | ScriptedBackend) -> dict[str, Any]:
    out: dict[str, Any] = {t: ScriptedBackend(t, ANSWER) for t in ("local", "mid", "top")}
    out.update(down)
    return out


async def run(
    core: RouterCore, arm: str, who: Tenant | None = None, request_id: str = "req"
) -> tuple[str, GenerateResult]:
    text = ""
    final = None
    async for ev in core.generate(
        who or tenant(), PROMPT, Hints(arms=(arm,)), request_id=request_id
    ):
        if isinstance(ev, Delta):
            text += ev.text
        else:
            final = ev
    assert final is not None
    return text, final


def ledger_of(core: RouterCore) -> LoggingLedger:
    assert isinstance(core.ledger, LoggingLedger)
    return core.ledger


def record(core: RouterCore) -> dict[str, Any]:
    assert isinstance(core.sink, ListSink)
    [rec] = core.sink.decisions  # exactly one record per request
    return rec


def micros(core: RouterCore, tier: str, input_tokens: int, output_tokens: int) -> int:
    return core.catalog.price_of(tier).micros(input_tokens, output_tokens)


async def reserved(core: RouterCore, arm: str) -> int:
    r = await core.route(tenant(), PROMPT, Hints(arms=(arm,)), reserve=False)
    return r.decision.chosen.reserved_cost_micros


async def test_a_down_tier_falls_back_and_settles_at_the_fallback_price() -> None:
    local = DownBackend("local")
    core = make_core(backends(local=local))
    text, final = await run(core, "local/greedy")

    assert text == ANSWER == final.answer
    d = final.decision
    assert d.arm == "mid/greedy" and d.fallback_from == "local"
    assert d.chosen.arm == "mid/greedy"
    assert final.cost_micros == micros(core, "mid", 10, 5) == 20
    assert d.chosen.reserved_cost_micros == await reserved(core, "mid/greedy")
    led = ledger_of(core)
    assert led.spent == {"acme": 20} and led.holds == {}
    # settled under the fallback's own id; the first hold was released, never charged
    assert led.settled == {("acme", "req/fallback/mid"): 20}
    # the fallback was held while the failed tier's hold was still in place
    assert led.asked == [("req", frozenset()), ("req/fallback/mid", frozenset({"req"}))]
    assert len(local.requests) == 1
    rec = record(core)
    assert rec["arm"] == "mid/greedy" and rec["tier"] == "mid" and rec["model"] == "m"
    assert rec["fallback_from"] == "local"
    assert "local" in rec["fallback_reason"] and "BackendUnavailable" in rec["fallback_reason"]
    assert rec["error"] is None and rec["cost_usd"] == pytest.approx(20e-6)
    assert rec["request_id"] == "req" and rec["samples"] == 1
    assert rec["partial_output_tokens"] == 0
    # the decision index points at the arm that ran
    assert isinstance(core.decisions, DictIndex)
    assert core.decisions.owners[d.decision_id] == "acme"


async def test_the_same_strategy_is_kept_on_the_fallback_tier() -> None:
    core = make_core(backends(local=DownBackend("local")))
    _, final = await run(core, "local/vote@3")
    assert final.decision.arm == "mid/vote@3" and final.samples == 3
    assert final.cost_micros == micros(core, "mid", final.input_tokens, final.output_tokens)
    assert ledger_of(core).holds == {}


async def test_greedy_on_the_fallback_tier_when_the_same_strategy_is_not_allowed() -> None:
    core = make_core(backends(local=DownBackend("local")))
    who = tenant(arms=["local/vote@3", "mid/greedy"])
    _, final = await run(core, "local/vote@3", who)
    assert final.decision.arm == "mid/greedy" and final.decision.fallback_from == "local"
    assert ledger_of(core).holds == {}


async def test_a_tier_with_no_allowed_arm_is_skipped_along_the_chain() -> None:
    mid = ScriptedBackend("mid", ANSWER)
    core = make_core(backends(local=DownBackend("local"), mid=mid))
    who = tenant(arms=["local/greedy", "top/greedy"])
    _, final = await run(core, "local/greedy", who)
    assert final.decision.arm == "top/greedy" and final.decision.fallback_from == "local"
    assert mid.requests == []
    assert final.cost_micros == micros(core, "top", 10, 5)
    assert ledger_of(core).settled == {("acme", "req/fallback/top"): final.cost_micros}


async def test_no_allowed_fallback_raises_the_original_error_and_holds_nothing() -> None:
    core = make_core(backends(local=DownBackend("local")))
    with pytest.raises(BackendUnavailable, match="'local' is unavailable"):
        await run(core, "local/greedy", tenant(arms=["local/greedy"]))
    led = ledger_of(core)
    assert led.holds == {} and led.spent == {}
    rec = record(core)
    assert rec["arm"] == "local/greedy" and rec["fallback_from"] is None
    assert rec["error"].startswith("BackendUnavailable") and rec["cost_usd"] == 0


async def test_a_chain_of_two_down_tiers_ends_on_the_third() -> None:
    mid = DownBackend("mid")
    core = make_core(backends(local=DownBackend("local"), mid=mid))
    text, final = await run(core, "local/greedy")
    assert text == ANSWER
    assert final.decision.arm == "top/greedy" and final.decision.fallback_from == "local"
    assert len(mid.requests) == 1
    led = ledger_of(core)
    assert led.holds == {}
    assert led.settled == {("acme", "req/fallback/top"): micros(core, "top", 10, 5)}
    assert led.spent == {"acme": final.cost_micros}
    rec = record(core)
    assert rec["tier"] == "top" and rec["fallback_from"] == "local"
    assert "local:" in rec["fallback_reason"] and "mid:" in rec["fallback_reason"]


async def test_every_tier_down_fails_naming_every_tier_and_holds_nothing() -> None:
    core = make_core(
        backends(local=DownBackend("local"), mid=DownBackend("mid"), top=DownBackend("top"))
    )
    with pytest.raises(BackendUnavailable, match="no tier of the fallback chain") as info:
        await run(core, "local/greedy")
    assert all(f"{t}:" in info.value.message for t in ("local", "mid", "top"))
    led = ledger_of(core)
    assert led.holds == {} and led.spent == {}
    rec = record(core)
    assert rec["arm"] == "top/greedy" and rec["fallback_from"] == "local"
    assert rec["error"].startswith("BackendUnavailable")


async def test_a_fallback_the_budget_cannot_cover_fails_and_releases_the_first_hold() -> None:
    probe = make_core(backends())
    local_res, mid_res = await reserved(probe, "local/greedy"), await reserved(probe, "mid/greedy")
    assert local_res < mid_res
    mid = ScriptedBackend("mid", ANSWER)
    core = make_core(backends(local=DownBackend("local"), mid=mid))
    poor = tenant(cap_usd=(mid_res - 1) / 1e6)  # covers local's bound, not mid's
    with pytest.raises(BudgetExceeded):
        await run(core, "local/greedy", poor)
    led = ledger_of(core)
    assert led.holds == {} and led.spent == {} and mid.requests == []
    rec = record(core)
    assert rec["arm"] == "local/greedy" and rec["error"].startswith("BudgetExceeded")
    assert rec["fallback_reason"].startswith("local:")


async def test_a_fallback_that_fits_only_without_the_first_hold_is_taken() -> None:
    probe = make_core(backends())
    local_res, mid_res = await reserved(probe, "local/greedy"), await reserved(probe, "mid/greedy")
    core = make_core(backends(local=DownBackend("local")))
    tight = tenant(cap_usd=(local_res + mid_res - 1) / 1e6)  # not both holds at once
    _, final = await run(core, "local/greedy", tight)
    assert final.decision.arm == "mid/greedy"
    led = ledger_of(core)
    assert led.holds == {} and led.spent == {"acme": final.cost_micros}
    # asked once beside the first hold (refused), then again once it was released
    assert led.asked == [
        ("req", frozenset()),
        ("req/fallback/mid", frozenset({"req"})),
        ("req/fallback/mid", frozenset()),
    ]


async def test_no_fallback_once_text_reached_the_caller() -> None:
    mid = ScriptedBackend("mid", ANSWER)
    core = make_core(backends(local=DownBackend("local", text="17 *"), mid=mid))
    got: list[str] = []
    with pytest.raises(BackendUnavailable):
        async for ev in core.generate(tenant(), PROMPT, Hints(arms=("local/greedy",))):
            if isinstance(ev, Delta):
                got.append(ev.text)
    assert got == ["17 *"] and mid.requests == []
    led = ledger_of(core)
    assert led.holds == {} and led.spent == {}
    rec = record(core)
    assert rec["arm"] == "local/greedy" and rec["fallback_from"] is None
    assert rec["fallback_reason"] is None


async def test_tokens_produced_before_a_mid_stream_failure_are_charged() -> None:
    local = DownBackend("local", text="17 *", partial_output_tokens=7, error=BackendError)
    core = make_core(backends(local=local))
    with pytest.raises(BackendError):
        await run(core, "local/greedy")
    led = ledger_of(core)
    charge = micros(core, "local", 0, 7)
    assert charge > 0
    assert led.holds == {} and led.settled == {("acme", "req"): charge}
    rec = record(core)
    assert rec["cost_usd"] == pytest.approx(charge / 1e6)
    assert rec["partial_output_tokens"] == 7 and rec["output_tokens"] == 0
    assert rec["error"].startswith("BackendError")


async def test_tokens_of_a_silent_failed_tier_are_charged_beside_the_fallback() -> None:
    # vote emits only at the end, so a tier failing with tokens spent may still fall back
    local = DownBackend("local", partial_output_tokens=4)
    core = make_core(backends(local=local))
    _, final = await run(core, "local/vote@3")
    assert final.decision.arm == "mid/vote@3"
    led = ledger_of(core)
    first = led.settled[("acme", "req")]
    fallback = led.settled[("acme", "req/fallback/mid")]
    assert first == micros(core, "local", 0, 4)
    assert fallback == micros(core, "mid", final.input_tokens, final.output_tokens)
    assert final.cost_micros == first + fallback == led.spent["acme"]
    assert led.holds == {}
    rec = record(core)
    assert rec["partial_output_tokens"] == 4
    assert rec["cost_usd"] == pytest.approx(final.cost_micros / 1e6)


async def test_cancelling_during_the_fallback_run_leaves_no_hold() -> None:
    core = make_core(
        backends(local=DownBackend("local"), mid=ScriptedBackend("mid", ANSWER, stall=True))
    )
    task = asyncio.create_task(run(core, "local/greedy"))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if ("acme", "req/fallback/mid") in ledger_of(core).holds:
            break
    assert list(ledger_of(core).holds) == [("acme", "req/fallback/mid")]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger_of(core).holds == {} and ledger_of(core).spent == {}
    rec = record(core)
    assert rec["error"] == "cancelled" and rec["arm"] == "mid/greedy"


async def test_a_fallback_id_already_taken_is_a_conflict_and_leaves_its_hold_alone() -> None:
    core = make_core(backends(local=DownBackend("local")))
    led = ledger_of(core)
    await led.reserve("acme", "req/fallback/mid", 5, {"daily": 10**9}, 60)
    with pytest.raises(Conflict):
        await run(core, "local/greedy")
    assert led.holds == {("acme", "req/fallback/mid"): 5} and led.spent == {}


async def test_per_tier_usage_detail_and_estimates_reach_the_record_and_the_final() -> None:
    cfg = CONFIG.tiers["mid"]
    spread = ArmSpec(Arm("mid", "spread"), cfg, SpreadStrategy())
    core = make_core(backends(), extra=(spread,))
    _, final = await run(core, "mid/spread")
    # each tier's tokens at that tier's price
    assert final.cost_micros == micros(core, "mid", 10, 5) + micros(core, "top", 10, 5)
    assert ledger_of(core).spent == {"acme": final.cost_micros}
    assert final.usage_estimated and final.detail["escalated"] is True
    rec = record(core)
    assert rec["samples"] == 2 and rec["usage_estimated"] is True
    assert rec["detail"] == {"escalated": True, "agreement": 0.5, "votes": 2, "winner": "top"}
    assert rec["usage_by_tier"] == [
        {"tier": "mid", "input_tokens": 10, "output_tokens": 5, "samples": 1},
        {"tier": "top", "input_tokens": 10, "output_tokens": 5, "samples": 1},
    ]
    msg = final_to_pb(final).final
    assert msg.usage_estimated and msg.decision.fallback_from == ""
    assert dict(msg.detail) == {
        "escalated": "true",
        "agreement": "0.5",
        "votes": "2",
        "winner": "top",
    }


async def test_the_final_message_names_the_tier_fallen_back_from() -> None:
    core = make_core(backends(local=DownBackend("local")))
    _, final = await run(core, "local/greedy")
    msg = final_to_pb(final).final
    assert msg.decision.fallback_from == "local" and msg.decision.arm == "mid/greedy"
    assert msg.decision.tier == "mid" and msg.cost_micros == final.cost_micros
    assert not msg.usage_estimated and dict(msg.detail) == {}

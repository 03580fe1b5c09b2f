"""ε-greedy exploration: the propensities it logs, and the limits it never breaks."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest

from router.config.tenants import TenantConfig, hash_api_key
from router.core.protocols import LedgerState
from router.core.service import Delta, GenerateResult, Hints, RouterCore, Tenant
from router.policy.choose import Candidate, Constraints, choose_arm, propensities
from tests.unit.fakes import DictIndex, ListSink, MemoryLedger, make_core, tenant


def cand(arm: str, p: float, cost: int, *, fits: bool = True) -> Candidate:
    return Candidate(arm, p, cost, cost * 2, 100.0, 256, fits)


CHEAP = cand("local-7b/greedy", 0.60, 20)
VOTE = cand("local-7b/vote@5", 0.70, 100)
MID = cand("mid-32b/greedy", 0.80, 300)
BEST = cand("premium/greedy", 0.92, 4000)
ALL = [CHEAP, VOTE, MID, BEST]
FREE = Constraints(lambda_per_usd=0.0)  # greedy: premium/greedy

# chi-square critical values at p = 0.001 by degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}


class UnusedRandom(random.Random):
    def random(self) -> float:
        raise AssertionError("the policy drew a random number with ε = 0")


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.3, 0.9])
def test_propensities_sum_to_one_and_follow_the_formula(n: int, eps: float) -> None:
    arms = [f"t{i}/greedy" for i in range(n)]
    p = propensities(arms, "t0/greedy", eps)
    assert set(p) == set(arms)
    assert sum(p.values()) == pytest.approx(1.0)
    if n == 1:
        assert p == {"t0/greedy": 1.0}
    else:
        assert p["t0/greedy"] == pytest.approx(1 - eps)
        assert all(p[a] == pytest.approx(eps / (n - 1)) for a in arms[1:])


def test_empirical_frequencies_match_the_logged_propensities() -> None:
    rng = random.Random(20240611)
    eps, draws = 0.3, 20_000
    counts: Counter[str] = Counter()
    expected = propensities([c.arm for c in ALL], BEST.arm, eps)
    for _ in range(draws):
        choice = choose_arm(ALL, FREE, tenant="t", epsilon=eps, rng=rng)
        counts[choice.arm] += 1
        # every draw reports the probability of the arm it returned
        assert choice.propensity == pytest.approx(expected[choice.arm])
        assert choice.explored == (choice.arm != BEST.arm)
    chi2 = sum((counts[a] - draws * q) ** 2 / (draws * q) for a, q in expected.items())
    assert chi2 < CHI2_999[len(expected) - 1], (counts, chi2)
    # the importance weights 1/propensity recover the number of draws per arm
    for arm, q in expected.items():
        assert counts[arm] / q == pytest.approx(draws, rel=0.1)


def test_exploration_never_breaks_a_budget_hint_or_context_window() -> None:
    too_long = cand("short-ctx/greedy", 0.99, 1, fits=False)
    slow = Candidate("slow/greedy", 0.95, 50, 100, 9_000.0, 256)
    k = Constraints(
        lambda_per_usd=0.0,
        remaining_micros=700,  # MID reserves 600, BEST 8000
        max_cost_micros=650,
        max_latency_ms=1_000.0,
    )
    rng = random.Random(7)
    seen: Counter[str] = Counter()
    for _ in range(3_000):
        choice = choose_arm([*ALL, too_long, slow], k, tenant="t", epsilon=0.9, rng=rng)
        seen[choice.arm] += 1
        assert choice.propensity == pytest.approx(0.1 if choice.arm == MID.arm else 0.45)
    assert set(seen) == {CHEAP.arm, VOTE.arm, MID.arm}


def test_epsilon_zero_never_explores_and_draws_nothing() -> None:
    for lam in (0.0, 100.0, 1e6):
        choice = choose_arm(
            ALL, Constraints(lambda_per_usd=lam), tenant="t", epsilon=0.0, rng=UnusedRandom()
        )
        assert not choice.explored and choice.propensity == 1.0


def test_a_single_eligible_arm_has_propensity_one() -> None:
    k = Constraints(lambda_per_usd=0.0, max_cost_micros=50)  # only CHEAP (reserves 40)
    for seed in range(50):
        choice = choose_arm(ALL, k, tenant="t", epsilon=0.5, rng=random.Random(seed))
        assert choice.arm == CHEAP.arm and choice.propensity == 1.0 and not choice.explored


# ---- through RouterCore ------------------------------------------------------------------


async def generate(core: RouterCore, who: Tenant, hints: Hints | None = None) -> GenerateResult:
    final = None
    async for ev in core.generate(who, "What is 17*23?", hints or Hints()):
        if not isinstance(ev, Delta):
            final = ev
    assert final is not None
    return final


def records(core: RouterCore) -> list[dict[str, object]]:
    assert isinstance(core.sink, ListSink)
    return core.sink.decisions


async def test_generate_explores_and_logs_consistent_propensities() -> None:
    core = make_core()
    core.rng = random.Random(3)
    who = tenant(exploration=0.4)
    finals = [await generate(core, who) for _ in range(60)]
    arms = {"small/greedy", "small/vote@3", "big/greedy"}
    expected = propensities(sorted(arms), "big/greedy", 0.4)
    for final, rec in zip(finals, records(core), strict=True):
        d = final.decision
        assert rec["decision_id"] == d.decision_id and rec["arm"] == d.arm
        assert rec["explored"] is d.explored and rec["propensity"] == d.propensity
        assert d.explored == (d.arm != "big/greedy")
        assert d.propensity == pytest.approx(expected[d.arm])
    kinds = Counter(f.decision.explored for f in finals)
    assert kinds[True] > 0 and kinds[False] > 0


async def test_route_explores_the_same_way() -> None:
    core = make_core()
    core.rng = random.Random(5)
    who = tenant(exploration=0.5)
    seen: Counter[bool] = Counter()
    for _ in range(60):
        r = await core.route(who, "hi", Hints(), reserve=False)
        seen[r.decision.explored] += 1
        assert r.decision.propensity == pytest.approx(0.5 if not r.decision.explored else 0.25)
    assert seen[True] > 0 and seen[False] > 0
    assert isinstance(core.ledger, MemoryLedger) and core.ledger.holds == {}


async def test_pinned_arms_are_never_explored() -> None:
    core = make_core()
    core.rng = UnusedRandom()
    who = tenant(exploration=0.9)
    for _ in range(20):
        final = await generate(core, who, Hints(arms=("small/greedy", "big/greedy")))
        assert final.decision.arm == "big/greedy"
        assert final.decision.propensity == 1.0 and not final.decision.explored
        r = await core.route(who, "hi", Hints(arms=("small/vote@3",)), reserve=False)
        assert r.decision.propensity == 1.0 and not r.decision.explored
    assert all(rec["propensity"] == 1.0 and rec["explored"] is False for rec in records(core))


async def test_exploration_stays_within_the_remaining_budget() -> None:
    core = make_core()
    core.rng = random.Random(11)
    probe = await core.route(tenant(), "What is 17*23?", Hints(), reserve=False)
    reserved = {
        v.candidate.arm: v.candidate.reserved_cost_micros for v in probe.decision.candidates
    }
    assert reserved["big/greedy"] > max(reserved["small/greedy"], reserved["small/vote@3"])
    # the cap covers either small arm's reservation, not big/greedy's
    cap = (max(reserved["small/greedy"], reserved["small/vote@3"]) + 1) / 1e6
    who = tenant(cap_usd=cap, exploration=0.9)
    seen: Counter[str] = Counter()
    for _ in range(40):
        r = await core.route(who, "What is 17*23?", Hints(), reserve=False)
        seen[r.decision.arm] += 1
    assert set(seen) == {"small/greedy", "small/vote@3"}


class StaleLedger(MemoryLedger):
    """Reports far more budget left than ``reserve`` then grants: another replica's holds
    arrived between the read and the reservation."""

    async def state(self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC") -> LedgerState:
        return LedgerState(self._state(tenant, {w: 10**12 for w in caps}))


async def test_a_refused_reservation_moves_to_the_cheapest_arm_with_propensity_one() -> None:
    core = make_core()
    probe = await core.route(tenant(), "What is 17*23?", Hints(), reserve=False)
    reserved = {
        v.candidate.arm: v.candidate.reserved_cost_micros for v in probe.decision.candidates
    }
    ledger = StaleLedger()
    core.ledger = ledger
    core.rng = random.Random(2)
    cap = (max(reserved["small/greedy"], reserved["small/vote@3"]) + 1) / 1e6
    who = tenant(cap_usd=cap * 1000, exploration=0.5)
    moved = explored = 0
    for i in range(40):
        # spend up to the cap's edge so that only the small arms still fit
        ledger.spent.clear()
        ledger.spent["acme"] = round(cap * 1000 * 1e6) - round(cap * 1e6)
        r = await core.route(who, "What is 17*23?", Hints(), reserve=True, request_id=f"r{i}")
        d = r.decision
        if d.explored:
            explored += 1
            assert d.arm in {"small/greedy", "small/vote@3"}
            assert d.propensity == pytest.approx(0.25)
        else:
            # the greedy big/greedy was refused by the ledger: a forced move, not a draw
            moved += 1
            assert d.arm == "small/greedy" and d.propensity == 1.0
        assert isinstance(core.decisions, DictIndex)
        assert core.decisions.entries[d.decision_id].arm == d.arm
        ledger.holds.clear()
    assert moved > 0 and explored > 0


async def test_the_default_tenant_rate_explores_about_one_request_in_a_hundred() -> None:
    core = make_core()
    core.rng = random.Random(13)
    who = Tenant("acme", TenantConfig(api_key_sha256=hash_api_key("acme"), daily_cap_usd=10.0))
    assert who.config.exploration == 0.01
    explored = 0
    for _ in range(2_000):
        r = await core.route(who, "hi", Hints(), reserve=False)
        explored += r.decision.explored
    # binomial(2000, 0.01): mean 20, sd 4.45
    assert 5 <= explored <= 40

"""One request's life: features → predict → policy → ledger → execute → log.

This module talks only to the protocols in ``router.core.protocols``; transports call it with
an authenticated tenant and plain values, and map its ``RouterError``s to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from router.core.catalog import ArmSpec, Catalog
from router.core.costs import MICROS_PER_USD, sum_cost
from router.core.drift import DriftTracker
from router.core.estimate import candidate, input_token_bounds
from router.core.protocols import (
    Backend,
    DecisionIndex,
    Embedder,
    Ledger,
    LedgerState,
    OutcomeSink,
    Predictor,
)
from router.core.records import outcome_record
from router.core.requests import (
    ArmView,
    BudgetView,
    Decision,
    Delta,
    GenerateResult,
    Hints,
    RouteResult,
    Tenant,
)
from router.core.types import (
    Prediction,
    Reservation,
    StrategyResult,
    WindowState,
)
from router.errors import (
    BackendError,
    BackendUnavailable,
    BudgetExceeded,
    Conflict,
    DeadlineExceeded,
    InvalidRequest,
    LedgerUnavailable,
    NotFound,
    PermissionDenied,
    RouterError,
    UnknownArm,
)
from router.policy.choose import (
    Candidate,
    Choice,
    Constraints,
    choose_arm,
    exclusion_reason,
    utility,
)
from router.strategies.base import RunContext

log = logging.getLogger("ttc_router.core")
T = TypeVar("T")

MAX_REQUEST_ID_CHARS = 128


@dataclass(frozen=True)
class _Plan:
    decision: Decision
    remaining_micros: int
    # The cheapest arm the hints allow, budget aside: what a refused reservation moves to.
    cheapest: Candidate | None
    # What pricing another arm for this prompt needs (a tier fallback after the decision).
    prediction: Prediction
    input_expected: int
    input_upper: int
    max_cost_micros: int | None


@dataclass
class _Spend:
    """The money side of one Generate as it moves between tiers: the live hold (if any),
    what failed calls were charged, and why earlier tiers were left."""

    decision: Decision
    hold_id: str
    held: bool = True
    charged_micros: int = 0
    partial_output_tokens: int = 0
    emitted: bool = False
    failures: list[str] = field(default_factory=list)


@dataclass
class RouterCore:
    """Decides and spends compute for one request at a time (many concurrently).

    ``rng`` draws the tenants' ε-exploration; ``drift`` compares predictions with the
    scores and settled costs that come back.
    """

    embedder: Embedder
    predictor: Predictor
    ledger: Ledger
    backends: Mapping[str, Backend]
    catalog: Catalog
    sink: OutcomeSink
    decisions: DecisionIndex
    count_tokens: Callable[[str], int]
    hold_ttl_s: float = 300.0
    max_prompt_chars: int = 32_000
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    drift: DriftTracker = field(default_factory=DriftTracker)
    _cleanups: set[asyncio.Future[None]] = field(default_factory=set, init=False, repr=False)

    # ---- validation -------------------------------------------------------------------
    def _check_request_id(self, request_id: str) -> None:
        # Room is left under the ledger's 256-character id limit for the fallback suffix.
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidRequest(
                f"request_id has {len(request_id)} characters; the limit is {MAX_REQUEST_ID_CHARS}"
            )

    def _check_prompt(self, prompt: str) -> None:
        if not prompt or not prompt.strip():
            raise InvalidRequest("prompt is empty; send the text to answer in the 'prompt' field")
        if len(prompt) > self.max_prompt_chars:
            raise InvalidRequest(
                f"prompt has {len(prompt)} characters, more than the limit of "
                f"{self.max_prompt_chars}; shorten it or raise TTC_MAX_PROMPT_CHARS"
            )

    def _allowed_specs(self, tenant: Tenant, hints: Hints) -> list[ArmSpec]:
        if hints.arms:
            specs = []
            for name in hints.arms:
                if name not in self.catalog:
                    raise UnknownArm(
                        f"arm {name!r} is not offered; offered arms: "
                        f"{', '.join(self.catalog.names)}"
                    )
                if not tenant.config.allows(name):
                    raise PermissionDenied(f"tenant {tenant.name!r} may not use arm {name!r}")
                specs.append(self.catalog.get(name))
            return specs
        return [s for s in self.catalog if tenant.config.allows(s.name)]

    # ---- decision ---------------------------------------------------------------------
    async def _ledger_state(self, tenant: Tenant) -> LedgerState:
        try:
            return await self.ledger.state(tenant.name, tenant.caps, tz=tenant.tz)
        except LedgerUnavailable as exc:
            # Whether to go on without the ledger is the chosen tier's failure policy,
            # applied when the reservation is made.
            log.warning("budget state unavailable: %s", exc.message)
            return LedgerState((), 0.0, stale=True)

    def _lambda(self, tenant: Tenant, state: LedgerState) -> float:
        pacing = state.pacing_lambda_per_usd if tenant.config.pacing else 0.0
        return tenant.config.lambda_per_usd + pacing

    async def _decide(
        self, tenant: Tenant, prompt: str, hints: Hints, request_id: str, *, reserving: bool
    ) -> _Plan:
        self._check_request_id(request_id)
        self._check_prompt(prompt)
        hints.validate()
        specs = self._allowed_specs(tenant, hints)
        embedding = await self.embedder.embed(prompt)
        prediction = self.predictor.predict(embedding, prompt)
        in_expected, in_upper = input_token_bounds(prompt, self.count_tokens(prompt))
        candidates = [
            candidate(s, prediction.arms[s.name], in_expected, in_upper, self.catalog.price_of)
            for s in specs
        ]
        state = await self._ledger_state(tenant)
        remaining = state.remaining_micros
        max_cost = _min_opt(_usd_to_micros(hints.max_cost_usd), tenant.config.max_request_micros)
        constraints = Constraints(
            lambda_per_usd=self._lambda(tenant, state),
            remaining_micros=remaining,
            max_cost_micros=max_cost,
            min_quality=hints.min_quality,
            max_latency_ms=hints.max_latency_ms,
        )
        unbudgeted = replace(constraints, remaining_micros=None)
        eligible = [c for c in candidates if exclusion_reason(c, unbudgeted) is None]
        cheapest = min(eligible, key=lambda c: (c.reserved_cost_micros, c.arm), default=None)
        # Exploration is per tenant, and never for a request that named its arms.
        epsilon = 0.0 if hints.arms else tenant.config.exploration
        try:
            choice = choose_arm(
                candidates, constraints, tenant=tenant.name, epsilon=epsilon, rng=self.rng
            )
        except BudgetExceeded:
            if not reserving or cheapest is None:
                raise
            # The remaining budget was read before this request; holds may have gone since.
            # The ledger decides, atomically, on the cheapest arm the hints allow; a forced
            # move, so propensity 1 and not explored.
            choice = Choice(cheapest, utility(cheapest, constraints.lambda_per_usd))
        views = []
        for c in candidates:
            why = exclusion_reason(c, constraints)
            views.append(ArmView(c, why[0] if why else ""))
        decision = Decision(
            decision_id=uuid.uuid4().hex,
            request_id=request_id or uuid.uuid4().hex,
            spec=self.catalog.get(choice.arm),
            chosen=choice.candidate,
            propensity=choice.propensity,
            model_version=prediction.model_version,
            candidates=tuple(views),
            explored=choice.explored,
        )
        await self._remember(tenant, decision)
        return _Plan(
            decision,
            remaining if remaining is not None else 0,
            cheapest,
            prediction,
            in_expected,
            in_upper,
            max_cost,
        )

    async def _reserve(self, tenant: Tenant, plan: _Plan) -> tuple[Decision, Reservation]:
        """Hold the decision's reservation; if refused, try the cheapest allowed arm once."""
        decision = plan.decision
        try:
            res = await self._hold(tenant, decision)
        except BudgetExceeded:
            fb = plan.cheapest
            if fb is None or fb.reserved_cost_micros >= decision.chosen.reserved_cost_micros:
                raise
            # A forced move, not a draw of the policy: propensity 1, not explored.
            decision = replace(
                decision,
                spec=self.catalog.get(fb.arm),
                chosen=fb,
                propensity=1.0,
                explored=False,
            )
            res = await self._hold(tenant, decision)
            await self._remember(tenant, decision)
        return decision, res

    async def _remember(self, tenant: Tenant, decision: Decision) -> None:
        """Index the decision's tenant, arm and predictions for ``RecordOutcome``."""
        await self.decisions.remember(
            decision.decision_id,
            tenant.name,
            decision.arm,
            p_success=decision.chosen.p_success,
            predicted_cost_usd=decision.chosen.expected_cost_micros / MICROS_PER_USD,
        )

    async def _hold(
        self, tenant: Tenant, decision: Decision, hold_id: str | None = None
    ) -> Reservation:
        """Reserve the decision's bound under ``hold_id`` (the request id by default)."""
        tier = decision.spec.tier
        allowance = (
            _usd_to_micros(tier.fail_open_allowance_usd)
            if tier.failure_policy == "fail_open"
            else None
        )
        return await self.ledger.reserve(
            tenant.name,
            hold_id or decision.request_id,
            decision.chosen.reserved_cost_micros,
            tenant.caps,
            self.hold_ttl_s,
            tz=tenant.tz,
            fail_open_micros=allowance,
        )

    async def route(
        self, tenant: Tenant, prompt: str, hints: Hints, *, request_id: str = "", reserve: bool
    ) -> RouteResult:
        plan = await self._decide(tenant, prompt, hints, request_id, reserving=reserve)
        if not reserve:
            return RouteResult(plan.decision, False, plan.remaining_micros)
        decision, res = await self._reserve(tenant, plan)
        return RouteResult(decision, True, _remaining(res.windows))

    # ---- generation -------------------------------------------------------------------
    async def generate(
        self,
        tenant: Tenant,
        prompt: str,
        hints: Hints,
        *,
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> AsyncGenerator[Delta | GenerateResult, None]:
        """Stream the answer; the last item is the ``GenerateResult``.

        The budget hold is settled on success and released on any failure or cancellation,
        and exactly one outcome record is written either way.

        Tier fallback: when the run raises ``BackendUnavailable`` (the tier's breaker is
        open or its retries are used up) before any answer text reached the caller, the
        request moves to the tier's ``fallback``: to ``<tier>/<strategy>`` with the policy's
        strategy if that arm is offered, allowed for the tenant, within the request's cost
        limits and the tier's context, else to ``<tier>/greedy`` on the same terms, else on
        along the chain. Hints that name arms, quality or latency do not restrict the
        fallback; ``max_cost_usd`` and the tenant's per-request cap do. The fallback arm's
        bound is reserved under ``<request_id>/fallback/<tier>`` while the failed tier's
        hold is still in place, and only then is that hold dropped, so the tenant's spend
        plus holds never passes its cap. If both holds do not fit together, the failed
        tier's hold is dropped first and the fallback's reservation asked once more; if it
        is refused again the request fails with ``BudgetExceeded``. A failure after text
        was sent is not retried elsewhere.

        Failed calls: a hold is released and nothing charged, unless the failure reports
        ``partial_output_tokens`` (tokens produced before a mid-stream failure): those are
        settled at the highest output price among the tiers the arm's strategy may call,
        since the error does not say which tier produced them. Input tokens of a failed call
        are not charged; the backend reports none.
        """
        started = time.monotonic()
        deadline = started + timeout_s if timeout_s is not None else None
        plan = await _within(
            self._decide(tenant, prompt, hints, request_id, reserving=True), deadline
        )
        decision, res = await self._reserve(tenant, plan)
        if res.replayed:
            # The ledger answered an earlier request with this id (idempotent reserve); running
            # the backend again would spend money no reservation covers. The hold is the
            # earlier request's, so it is left alone.
            raise Conflict(
                f"request_id {decision.request_id!r} was already used by another Generate; "
                "send a new request_id for a new request"
            )
        spend = _Spend(decision, decision.request_id)
        strategy = decision.spec.strategy.name
        tried = {decision.spec.arm.tier}
        task: asyncio.Task[StrategyResult] | None = None
        settled = recorded = False
        try:
            while True:
                queue: asyncio.Queue[str | None] = asyncio.Queue()
                task = asyncio.create_task(self._run(spend, prompt, deadline, queue))
                try:
                    while True:
                        item = await _within(queue.get(), deadline)
                        if item is None:
                            break
                        yield Delta(item)
                    result = await task
                    break
                except BackendUnavailable as exc:
                    if spend.emitted:
                        raise
                    target = self._fallback_target(
                        tenant, plan, spend.decision.spec.arm.tier, strategy, tried
                    )
                    if target is None:
                        if not spend.failures:
                            raise
                        # Say what happened on every tier of the chain, not only the last.
                        tiers = [*spend.failures, f"{spend.decision.spec.arm.tier}: {exc.message}"]
                        raise BackendUnavailable(
                            "no tier of the fallback chain could answer: " + "; ".join(tiers),
                            partial_output_tokens=exc.partial_output_tokens,
                        ) from exc
                    await self._fall_back(tenant, spend, target, exc)
            decision = spend.decision
            spec = decision.spec
            cost = sum_cost(spec, result, self.catalog.price_of)
            audit = {
                "arm": decision.arm,
                "decision_id": decision.decision_id,
                "input_tokens": str(result.input_tokens),
                "output_tokens": str(result.output_tokens),
                "samples": str(result.samples),
            }
            if decision.fallback_from is not None:
                audit["fallback_from"] = decision.fallback_from
            total = cost + spend.charged_micros
            latency_ms = (time.monotonic() - started) * 1000
            # The record is written before the charge: a replica that dies between the two
            # leaves a record whose charge never reached the ledger (the hold then expires),
            # never a settled charge without its record.
            await self._record(tenant, prompt, spend, result, total, latency_ms, None)
            recorded = True
            windows = await self.ledger.settle(
                tenant.name, spend.hold_id, cost, audit, tz=tenant.tz
            )
            settled = True
            spend.held = False
            self.drift.observe_cost(
                decision.arm,
                decision.chosen.expected_cost_micros / MICROS_PER_USD,
                cost / MICROS_PER_USD,
            )
            if cost > decision.chosen.reserved_cost_micros:
                log.warning(
                    "settled cost above reservation",
                    extra={
                        "decision_id": decision.decision_id,
                        "cost": cost,
                        "reserved": decision.chosen.reserved_cost_micros,
                    },
                )
            yield GenerateResult(
                answer=result.answer,
                decision=decision,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                samples=result.samples,
                cost_micros=total,
                remaining_micros=_remaining(windows),
                latency_ms=latency_ms,
                usage_estimated=result.usage_estimated,
                detail=dict(result.detail),
            )
        except BaseException as exc:
            # The clean-up runs as its own task, shielded: a second cancellation while it
            # runs (the caller's deadline racing the request's own, a client that goes away
            # during the clean-up) must not skip the hold's release or the record.
            cleanup = asyncio.ensure_future(
                self._after_failure(
                    tenant,
                    prompt,
                    spend,
                    task,
                    exc,
                    settled=settled,
                    recorded=recorded,
                    started=started,
                )
            )
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            await asyncio.shield(cleanup)
            raise

    async def _after_failure(
        self,
        tenant: Tenant,
        prompt: str,
        spend: _Spend,
        task: asyncio.Task[StrategyResult] | None,
        exc: BaseException,
        *,
        settled: bool,
        recorded: bool,
        started: float,
    ) -> None:
        """Stop the strategy, end the hold and write the record of a request that failed."""
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not settled:
            await self._drop_hold(tenant, spend, exc)
        if not recorded:
            latency_ms = (time.monotonic() - started) * 1000
            await self._record(
                tenant, prompt, spend, None, spend.charged_micros, latency_ms, _err_name(exc)
            )

    async def _run(
        self,
        spend: _Spend,
        prompt: str,
        deadline: float | None,
        queue: asyncio.Queue[str | None],
    ) -> StrategyResult:
        """Run the current arm's strategy, passing its text to ``queue`` (then None)."""
        decision = spend.decision

        async def emit(text: str) -> None:
            if text:
                spend.emitted = True
                await queue.put(text)

        try:
            return await decision.spec.strategy.run(
                RunContext(
                    backend=self.backends[decision.spec.arm.tier],
                    prompt=prompt,
                    max_tokens=decision.chosen.max_tokens,
                    timeout_s=_left(deadline),
                    emit=emit,
                    backends=self.backends,
                )
            )
        finally:
            queue.put_nowait(None)

    def _fallback_target(
        self, tenant: Tenant, plan: _Plan, failed_tier: str, strategy: str, tried: set[str]
    ) -> tuple[ArmSpec, Candidate] | None:
        """The arm a request on ``failed_tier`` moves to, priced for this prompt, or None.

        Walks the tier's fallback chain, skipping tiers already tried.
        """
        limits = Constraints(lambda_per_usd=0.0, max_cost_micros=plan.max_cost_micros)
        tier = self._next_tier(failed_tier)
        while tier is not None and tier not in tried:
            tried.add(tier)
            if tier in self.backends:
                for name in dict.fromkeys((f"{tier}/{strategy}", f"{tier}/greedy")):
                    pred = plan.prediction.arms.get(name)
                    if name not in self.catalog or pred is None or not tenant.config.allows(name):
                        continue
                    spec = self.catalog.get(name)
                    priced = candidate(
                        spec,
                        pred,
                        plan.input_expected,
                        plan.input_upper,
                        self.catalog.price_of,
                    )
                    if exclusion_reason(priced, limits) is None:
                        return spec, priced
            tier = self._next_tier(tier)
        return None

    def _next_tier(self, tier: str) -> str | None:
        cfg = self.catalog.tiers.get(tier)
        return cfg.fallback if cfg is not None else None

    async def _fall_back(
        self,
        tenant: Tenant,
        spend: _Spend,
        target: tuple[ArmSpec, Candidate],
        failure: BackendError,
    ) -> None:
        """Move the request to ``target``: hold its bound, then drop the failed tier's hold.

        Raises ``BudgetExceeded`` when the fallback's bound cannot be held even after the
        failed tier's hold is gone; the request then holds nothing.
        """
        spec, priced = target
        failed = spend.decision
        spend.failures.append(f"{failed.spec.arm.tier}: {_err_name(failure)}")
        moved = replace(
            failed,
            spec=spec,
            chosen=priced,
            fallback_from=failed.fallback_from or failed.spec.arm.tier,
        )
        hold_id = f"{failed.request_id}/fallback/{spec.arm.tier}"
        try:
            res = await self._hold(tenant, moved, hold_id)
        except BudgetExceeded:
            # Both holds at once do not fit the cap: free the failed tier's and ask again.
            await self._drop_hold(tenant, spend, failure)
            res = await self._hold(tenant, moved, hold_id)
        except BaseException:
            await self._drop_hold(tenant, spend, failure)
            raise
        if res.replayed:
            # Another request already used this id; its hold is not this request's to spend.
            await self._drop_hold(tenant, spend, failure)
            raise Conflict(
                f"request_id {hold_id!r}, needed to fall back from tier "
                f"{failed.spec.arm.tier!r}, was already used; send a new request_id"
            )
        failed_held, failed_hold_id = spend.held, spend.hold_id
        spend.decision, spend.hold_id, spend.held, spend.emitted = moved, hold_id, True, False
        if failed_held:
            await self._end_hold(tenant, spend, failed_hold_id, failed, failure)
        await self._remember(tenant, moved)
        log.warning(
            "tier down; request moved to its fallback",
            extra={
                "decision_id": moved.decision_id,
                "from_arm": failed.arm,
                "to_arm": moved.arm,
                "reason": failure.message,
            },
        )

    async def _drop_hold(self, tenant: Tenant, spend: _Spend, failure: BaseException) -> None:
        """End the request's live hold, if it has one, after ``failure``."""
        if spend.held:
            spend.held = False
            await self._end_hold(tenant, spend, spend.hold_id, spend.decision, failure)

    async def _end_hold(
        self,
        tenant: Tenant,
        spend: _Spend,
        hold_id: str,
        decision: Decision,
        failure: BaseException,
    ) -> None:
        """Settle the output tokens ``failure`` reports as produced under ``hold_id``, or
        release the hold when there are none (or the charge cannot be written)."""
        tokens = failure.partial_output_tokens if isinstance(failure, BackendError) else 0
        if tokens > 0:
            spec = decision.spec
            cost = max(
                self.catalog.price_of(t).micros(0, tokens)
                for t in spec.strategy.tiers_used(spec.arm.tier)
            )
            audit = {
                "arm": decision.arm,
                "decision_id": decision.decision_id,
                "output_tokens": str(tokens),
                "failed": _err_name(failure)[:200],
            }
            try:
                await asyncio.shield(
                    self.ledger.settle(tenant.name, hold_id, cost, audit, tz=tenant.tz)
                )
            except RouterError as exc:
                log.warning("charging a failed call's tokens failed: %s", exc.message)
            else:
                spend.charged_micros += cost
                spend.partial_output_tokens += tokens
                return
        await self._release_quietly(tenant, hold_id)

    async def _release_quietly(self, tenant: Tenant, hold_id: str) -> None:
        try:
            await asyncio.shield(self.ledger.release(tenant.name, hold_id))
        except RouterError as exc:
            # The hold expires by itself after hold_ttl_s; nothing is charged for it.
            log.warning("release failed; hold will expire: %s", exc.message)

    async def _record(
        self,
        tenant: Tenant,
        prompt: str,
        spend: _Spend,
        result: StrategyResult | None,
        cost_micros: int,
        latency_ms: float,
        error: str | None,
    ) -> None:
        """Write the request's one outcome record (``router.core.records``)."""
        record = outcome_record(
            tenant=tenant.name,
            prompt=prompt,
            decision=spend.decision,
            result=result,
            cost_micros=cost_micros,
            latency_ms=latency_ms,
            error=error,
            ts=datetime.fromtimestamp(self.clock(), UTC).isoformat(),
            partial_output_tokens=spend.partial_output_tokens,
            fallback_reason="; ".join(spend.failures) or None,
        )
        # Shielded: a cancelled request still leaves its record.
        await asyncio.shield(self.sink.write_decision(record))

    # ---- outcomes and budget ----------------------------------------------------------
    async def record_outcome(self, tenant: Tenant, decision_id: str, score: float) -> None:
        """Log ``score`` for the tenant's decision and add it to the arm's drift window."""
        if not decision_id:
            raise InvalidRequest("decision_id is empty; pass the id returned by Route or Generate")
        if not (0.0 <= score <= 1.0) or math.isnan(score):
            raise InvalidRequest(f"score must be within [0, 1], got {score}")
        found = await self.decisions.lookup(decision_id)
        if found is None:
            raise NotFound(f"decision {decision_id!r} is unknown or has expired")
        if found.tenant != tenant.name:
            raise PermissionDenied(f"decision {decision_id!r} belongs to another tenant")
        await self.sink.write_score(decision_id, tenant.name, score)
        if found.p_success is not None and found.arm:
            self.drift.observe_success(found.arm, found.p_success, score)

    async def budget_view(self, tenant: Tenant) -> BudgetView:
        """Windows, the λ the policy uses now (configured + pacing) and the per-request cap."""
        state = await self.ledger.state(tenant.name, tenant.caps, tz=tenant.tz)
        return BudgetView(
            windows=state.windows,
            lambda_per_usd=self._lambda(tenant, state),
            pacing_lambda_per_usd=state.pacing_lambda_per_usd if tenant.config.pacing else 0.0,
            max_request_micros=tenant.config.max_request_micros,
            timezone=tenant.tz,
        )


def _remaining(windows: tuple[WindowState, ...]) -> int:
    return min((w.remaining_micros for w in windows), default=0)


def _usd_to_micros(usd: float | None) -> int | None:
    return None if usd is None else math.floor(usd * MICROS_PER_USD)


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the request's deadline passed before the backend was called")
    return left


async def _within(aw: Awaitable[T], deadline: float | None) -> T:
    if deadline is None:
        return await aw
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            return await aw
    except TimeoutError as exc:
        raise DeadlineExceeded("the request's deadline passed; raise the client deadline") from exc


def _err_name(exc: BaseException) -> str:
    if isinstance(exc, RouterError):
        return f"{type(exc).__name__}: {exc.message}"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(exc).__name__


__all__ = [
    "ArmView",
    "BudgetView",
    "Decision",
    "Delta",
    "GenerateResult",
    "Hints",
    "RouteResult",
    "RouterCore",
    "Tenant",
    "sum_cost",
]

"""One request's life: features → predict → policy → ledger → execute → log.

This module talks only to the protocols in ``router.core.protocols``; transports call it with
an authenticated tenant and plain values, and map its ``RouterError``s to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from router.config.tenants import TenantConfig
from router.core.catalog import ArmSpec, Catalog
from router.core.estimate import candidate, input_token_bounds
from router.core.protocols import Backend, DecisionIndex, Embedder, Ledger, OutcomeSink, Predictor
from router.core.types import StrategyResult, WindowState
from router.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RouterError,
    UnknownArm,
)
from router.policy.choose import Candidate, Constraints, choose_arm, exclusion_reason

log = logging.getLogger("ttc_router.core")
T = TypeVar("T")

MICROS_PER_USD = 1_000_000


@dataclass(frozen=True)
class Tenant:
    name: str
    config: TenantConfig

    @property
    def caps(self) -> dict[str, int]:
        return {"daily": self.config.daily_cap_micros}


@dataclass(frozen=True)
class Hints:
    arms: tuple[str, ...] = ()
    max_cost_usd: float | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None

    def validate(self) -> None:
        if self.max_cost_usd is not None and not self.max_cost_usd > 0:
            raise InvalidRequest("hints.max_cost_usd must be > 0 when set")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise InvalidRequest("hints.min_quality must be within [0, 1] when set")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise InvalidRequest("hints.max_latency_ms must be > 0 when set")


@dataclass(frozen=True)
class ArmView:
    candidate: Candidate
    excluded_reason: str = ""


@dataclass(frozen=True)
class Decision:
    decision_id: str
    request_id: str
    spec: ArmSpec
    chosen: Candidate
    propensity: float
    model_version: str
    candidates: tuple[ArmView, ...]

    @property
    def arm(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class RouteResult:
    decision: Decision
    reserved: bool
    remaining_micros: int


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class GenerateResult:
    answer: str
    decision: Decision
    input_tokens: int
    output_tokens: int
    samples: int
    cost_micros: int
    remaining_micros: int
    latency_ms: float


@dataclass
class RouterCore:
    """Decides and spends compute for one request at a time (many concurrently)."""

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
    _inflight: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)

    # ---- validation -------------------------------------------------------------------
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
    async def _decide(
        self, tenant: Tenant, prompt: str, hints: Hints, request_id: str
    ) -> tuple[Decision, int]:
        self._check_prompt(prompt)
        hints.validate()
        specs = self._allowed_specs(tenant, hints)
        embedding = await self.embedder.embed(prompt)
        prediction = self.predictor.predict(embedding, prompt)
        in_expected, in_upper = input_token_bounds(prompt, self.count_tokens(prompt))
        candidates = [candidate(s, prediction.arms[s.name], in_expected, in_upper) for s in specs]
        windows = await self.ledger.windows(tenant.name, tenant.caps)
        remaining = min(w.remaining_micros for w in windows) if windows else None
        max_cost = _min_opt(
            _usd_to_micros(hints.max_cost_usd), _usd_to_micros(tenant.config.max_request_usd)
        )
        constraints = Constraints(
            lambda_per_usd=tenant.config.lambda_per_usd,
            remaining_micros=remaining,
            max_cost_micros=max_cost,
            min_quality=hints.min_quality,
            max_latency_ms=hints.max_latency_ms,
        )
        choice = choose_arm(candidates, constraints, tenant=tenant.name)
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
        )
        await self.decisions.remember(decision.decision_id, tenant.name, decision.arm)
        return decision, remaining if remaining is not None else 0

    async def route(
        self, tenant: Tenant, prompt: str, hints: Hints, *, request_id: str = "", reserve: bool
    ) -> RouteResult:
        decision, remaining = await self._decide(tenant, prompt, hints, request_id)
        if not reserve:
            return RouteResult(decision, False, remaining)
        res = await self.ledger.reserve(
            tenant.name,
            decision.request_id,
            decision.chosen.reserved_cost_micros,
            tenant.caps,
            self.hold_ttl_s,
        )
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
        """
        started = time.monotonic()
        deadline = started + timeout_s if timeout_s is not None else None
        decision, _ = await _within(self._decide(tenant, prompt, hints, request_id), deadline)
        spec = decision.spec
        await self.ledger.reserve(
            tenant.name,
            decision.request_id,
            decision.chosen.reserved_cost_micros,
            tenant.caps,
            self.hold_ttl_s,
        )
        backend = self.backends[spec.arm.tier]
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def emit(text: str) -> None:
            await queue.put(text)

        async def run() -> StrategyResult:
            try:
                return await spec.strategy.run(
                    backend,
                    prompt,
                    max_tokens=decision.chosen.max_tokens,
                    timeout_s=_left(deadline),
                    emit=emit,
                )
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())
        settled = False
        try:
            while True:
                item = await _within(queue.get(), deadline)
                if item is None:
                    break
                yield Delta(item)
            result = await task
            cost = sum_cost(spec, result)
            windows = await self.ledger.settle(
                tenant.name,
                decision.request_id,
                cost,
                {
                    "arm": decision.arm,
                    "decision_id": decision.decision_id,
                    "input_tokens": str(result.input_tokens),
                    "output_tokens": str(result.output_tokens),
                },
            )
            settled = True
            if cost > decision.chosen.reserved_cost_micros:
                log.warning(
                    "settled cost above reservation",
                    extra={
                        "decision_id": decision.decision_id,
                        "cost": cost,
                        "reserved": decision.chosen.reserved_cost_micros,
                    },
                )
            latency_ms = (time.monotonic() - started) * 1000
            await self._record(tenant, prompt, decision, result, cost, latency_ms, None)
            yield GenerateResult(
                answer=result.answer,
                decision=decision,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                samples=result.samples,
                cost_micros=cost,
                remaining_micros=_remaining(windows),
                latency_ms=latency_ms,
            )
        except BaseException as exc:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if not settled:
                await self._release_quietly(tenant, decision)
                latency_ms = (time.monotonic() - started) * 1000
                await self._record(tenant, prompt, decision, None, 0, latency_ms, _err_name(exc))
            raise

    async def _release_quietly(self, tenant: Tenant, decision: Decision) -> None:
        try:
            await asyncio.shield(self.ledger.release(tenant.name, decision.request_id))
        except RouterError as exc:
            # The hold expires by itself after hold_ttl_s; nothing is charged for it.
            log.warning("release failed; hold will expire: %s", exc.message)

    async def _record(
        self,
        tenant: Tenant,
        prompt: str,
        decision: Decision,
        result: StrategyResult | None,
        cost_micros: int,
        latency_ms: float,
        error: str | None,
    ) -> None:
        record: dict[str, Any] = {
            "prompt_id": decision.request_id,
            "prompt": prompt,
            "arm": decision.arm,
            "score": None,
            "cost_usd": cost_micros / MICROS_PER_USD,
            "task": "traffic",
            "input_tokens": result.input_tokens if result else 0,
            "output_tokens": result.output_tokens if result else 0,
            "latency_ms": round(latency_ms, 3),
            "propensity": decision.propensity,
            "request_id": decision.request_id,
            "tenant": tenant.name,
            "ts": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
            "model": decision.spec.tier.model,
            "decision_id": decision.decision_id,
            "tier": decision.spec.arm.tier,
            "strategy": decision.spec.strategy.name,
            "samples": result.samples if result else 0,
            "predicted_p_success": decision.chosen.p_success,
            "predicted_cost_usd": decision.chosen.expected_cost_micros / MICROS_PER_USD,
            "reserved_cost_usd": decision.chosen.reserved_cost_micros / MICROS_PER_USD,
            "model_version": decision.model_version,
            "error": error,
        }
        # Shielded: a cancelled request still leaves its record.
        await asyncio.shield(self.sink.write_decision(record))

    # ---- outcomes and budget ----------------------------------------------------------
    async def record_outcome(self, tenant: Tenant, decision_id: str, score: float) -> None:
        if not decision_id:
            raise InvalidRequest("decision_id is empty; pass the id returned by Route or Generate")
        if not (0.0 <= score <= 1.0) or math.isnan(score):
            raise InvalidRequest(f"score must be within [0, 1], got {score}")
        owner = await self.decisions.owner(decision_id)
        if owner is None:
            raise NotFound(f"decision {decision_id!r} is unknown or has expired")
        if owner != tenant.name:
            raise PermissionDenied(f"decision {decision_id!r} belongs to another tenant")
        await self.sink.write_score(decision_id, tenant.name, score)

    async def budget(self, tenant: Tenant) -> tuple[WindowState, ...]:
        return await self.ledger.windows(tenant.name, tenant.caps)


def sum_cost(spec: ArmSpec, result: StrategyResult) -> int:
    """Actual cost of a finished strategy from the token counts the backend reported."""
    return spec.tier.price.to_price().micros(result.input_tokens, result.output_tokens)


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

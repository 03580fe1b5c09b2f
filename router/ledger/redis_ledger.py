"""``RedisLedger``: the per-tenant budget ledger on Redis, one Lua script per operation.

Holds are kept per tenant in a sorted set scored by expiry plus a hash of amounts; a hold
whose expiry has passed is swept by the next ``reserve`` or ``state`` call, so a caller
that crashed frees its hold by itself. Each request id has a record (its state, held
amount and the caps it was admitted under) that makes ``reserve``, ``settle`` and
``release`` idempotent for ``record_ttl_s``. ``settle`` charges every window's counter,
capped or not, so a cap added later already sees the spend, and moves the tenant's pacing
price λ (see ``settle.lua``).

When Redis cannot be reached, ``reserve`` refuses (``LedgerUnavailable``) unless the caller
passes a fail-open allowance, and ``settle`` keeps the charge and writes it once Redis
answers again (``outage.py``); both are counted in ``metrics.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from router.core.protocols import LedgerState
from router.core.types import Reservation, WindowState
from router.errors import ConfigError, InvalidRequest, LedgerUnavailable
from router.ledger.batching import ScriptBatcher
from router.ledger.connect import connect
from router.ledger.connect import redis_address as redis_address
from router.ledger.keys import TenantKeys
from router.ledger.metrics import LEDGER_RECONCILED, LEDGER_REFUSALS, LEDGER_UNAVAILABLE
from router.ledger.outage import OutageBook, PendingCharge
from router.ledger.refusal import budget_exceeded, format_usd
from router.ledger.scripts import LedgerScripts
from router.ledger.windows import (
    COUNTER_GRACE_S,
    WINDOWS,
    WindowSpan,
    check_window,
    utc_from_timestamp,
    window_span,
    zone,
)

#: Hold keys and request records outlive the last hold by this much.
HOLD_GRACE_MS = 3_600_000
#: Fields every audit entry has; ``settle``'s ``audit`` mapping may not reuse them.
AUDIT_FIELDS = ("request_id", "tenant", "micros", "held", "ts", "late")
#: Amounts stay exact in Lua (doubles) below 2**53 micro-dollars, about $9 billion.
MAX_MICROS = 2**53 - 1
MAX_HOLD_TTL_S = 7 * 86_400.0
REFUSALS_MAXLEN = 100_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    return int(_text(value))


def _check_micros(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MICROS:
        raise InvalidRequest(
            f"{name} must be an integer of micro-dollars from 0 to {MAX_MICROS}, got {value!r}"
        )
    return value


def _check_caps(caps: Mapping[str, int]) -> list[tuple[str, int]]:
    """Caps in window order; unknown windows and negative caps are configuration errors."""
    for window, cap in caps.items():
        check_window(window)
        if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= MAX_MICROS:
            raise ConfigError(
                f"cap of window {window!r} must be an integer from 0 to {MAX_MICROS}, got {cap!r}"
            )
    return [(w, caps[w]) for w in WINDOWS if w in caps]


class RedisLedger:
    """The ``router.core.protocols.Ledger`` on Redis (single, Sentinel or Cluster).

    ``clock`` returns Unix seconds; it decides window boundaries and hold expiry, so tests
    can move time. ``pacing_gain`` scales how fast λ moves (0 turns pacing off) and
    ``max_lambda_per_usd`` bounds it. ``retry_after_s`` is how often unwritten charges are
    retried while Redis is unreachable. ``aclose`` closes the client only when ``from_url``
    made it.
    """

    def __init__(
        self,
        client: aredis.Redis,
        *,
        key_prefix: str = "ttc",
        clock: Callable[[], float] = time.time,
        record_ttl_s: float = 86_400.0,
        audit_maxlen: int = 1_000_000,
        pacing_gain: float = 2.0,
        max_lambda_per_usd: float = 1e7,
        retry_after_s: float = 1.0,
        address: str | None = None,
    ) -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ConfigError(f"key_prefix {key_prefix!r} must be non-empty without braces")
        if record_ttl_s <= 0 or audit_maxlen <= 0:
            raise ConfigError("record_ttl_s and audit_maxlen must be positive")
        if pacing_gain < 0 or max_lambda_per_usd < 0:
            raise ConfigError("pacing_gain and max_lambda_per_usd must not be negative")
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        self._record_ttl_ms = math.ceil(record_ttl_s * 1000)
        self._audit_maxlen = audit_maxlen
        self._gain = pacing_gain
        self._max_lambda = max_lambda_per_usd
        self._retry_after_s = retry_after_s
        self._next_catch_up = 0.0
        self._scripts = LedgerScripts.register(client)
        self._address = address or redis_address(client)
        self._owns_client = False
        self._spans: dict[tuple[str, str], WindowSpan] = {}
        self._batcher = None if isinstance(client, RedisCluster) else ScriptBatcher(client)
        self.outage = OutageBook()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "ttc",
        clock: Callable[[], float] = time.time,
        record_ttl_s: float = 86_400.0,
        audit_maxlen: int = 1_000_000,
        pacing_gain: float = 2.0,
        max_lambda_per_usd: float = 1e7,
        **client_kw: Any,
    ) -> RedisLedger:
        """A ledger on a new client for ``url`` (see ``router.ledger.connect`` for the forms).

        ``client_kw`` go to the redis-py client; by default connects and reads time out after
        2 s and a failed command is retried 3 times within about half a second.
        """
        client_kw.setdefault("socket_connect_timeout", 2.0)
        client_kw.setdefault("socket_timeout", 2.0)
        client_kw.setdefault("retry", Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), 3))
        client, address = connect(url, **client_kw)
        ledger = cls(
            client,
            key_prefix=key_prefix,
            clock=clock,
            record_ttl_s=record_ttl_s,
            audit_maxlen=audit_maxlen,
            pacing_gain=pacing_gain,
            max_lambda_per_usd=max_lambda_per_usd,
            address=address,
        )
        ledger._owns_client = True
        return ledger

    @property
    def address(self) -> str:
        """The Redis this ledger talks to, without credentials."""
        return self._address

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> aredis.Redis:
        return self._client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            if self._batcher is not None:
                return await self._batcher.call(script, list(keys), list(args))
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as e:
            raise LedgerUnavailable(
                f"budget ledger at {self._address} failed: {type(e).__name__}: {e}"
            ) from e

    def _now(self, at_s: float | None = None) -> tuple[datetime, int]:
        ts = self._clock() if at_s is None else at_s
        return utc_from_timestamp(ts), math.floor(ts * 1000)

    def _span(self, window: str, now: datetime, tz: str) -> WindowSpan:
        span = self._spans.get((tz, window))
        if span is None or not span.start <= now < span.end:
            span = window_span(window, now, zone(tz))
            self._spans[(tz, window)] = span
        return span

    def _states(
        self,
        spans: Sequence[WindowSpan],
        caps: Sequence[int],
        spent: Sequence[Any],
        held: int,
    ) -> tuple[WindowState, ...]:
        return tuple(
            WindowState(sp.window, sp.start, sp.end, cap, _int(sv), held)
            for sp, cap, sv in zip(spans, caps, spent, strict=True)
        )

    def _remember(self, tenant: str, windows: tuple[WindowState, ...], lam: Any) -> None:
        if windows:
            self.outage.last_state[tenant] = LedgerState(windows, float(_text(lam)))

    def _cached(self, tenant: str) -> tuple[WindowState, ...]:
        last = self.outage.last_state.get(tenant)
        return last.windows if last is not None else ()

    # ---- reserve ----------------------------------------------------------------------
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
        """Hold ``amount_micros`` for ``hold_ttl_s`` if every capped window can cover it.

        A repeated ``request_id`` returns the first admission unchanged (``replayed=True``),
        even after its hold was settled, released or expired. Raises ``BudgetExceeded``
        (holding nothing) when some window cannot cover the amount. When Redis cannot be
        reached: with ``fail_open_micros`` None raises ``LedgerUnavailable``, else admits the
        hold locally while this replica's unwritten spend for the tenant stays within it.
        """
        keys = TenantKeys(self._prefix, tenant)
        record = keys.request(request_id)
        amount = _check_micros("amount_micros", amount_micros)
        capped = _check_caps(caps)
        if not 0 < hold_ttl_s <= MAX_HOLD_TTL_S:
            raise InvalidRequest(
                f"hold_ttl_s must be above 0 and at most {MAX_HOLD_TTL_S:.0f} s, got {hold_ttl_s!r}"
            )
        if fail_open_micros is not None:
            _check_micros("fail_open_micros", fail_open_micros)
        await self._maybe_catch_up()
        now, now_ms = self._now()
        spans = [self._span(w, now, tz) for w, _ in capped]
        hold_ms = math.ceil(hold_ttl_s * 1000)
        args: list[Any] = [
            request_id,
            now_ms,
            amount,
            now_ms + hold_ms,
            max(self._record_ttl_ms, hold_ms + HOLD_GRACE_MS),
            hold_ms + HOLD_GRACE_MS,
            REFUSALS_MAXLEN,
        ]
        for w, cap in capped:
            args += [w, cap]
        try:
            reply = await self._run(
                self._scripts.reserve,
                [
                    keys.holds,
                    keys.hold_amounts,
                    keys.held_total,
                    record,
                    keys.pace,
                    keys.refusals,
                    *(keys.spent(sp) for sp in spans),
                ],
                args,
            )
        except LedgerUnavailable as exc:
            return self._reserve_locally(tenant, request_id, amount, fail_open_micros, exc)
        status, held_amount, held_total, lam, *spent = reply
        states = self._states(spans, [c for _, c in capped], spent, _int(held_total))
        self._remember(tenant, states, lam)
        if _text(status) == "refused":
            LEDGER_REFUSALS.inc()
            raise budget_exceeded(tenant, amount, states)
        return Reservation(
            tenant=tenant,
            request_id=request_id,
            held_micros=_int(held_amount),
            windows=states,
            replayed=_text(status) == "replayed",
        )

    def _reserve_locally(
        self,
        tenant: str,
        request_id: str,
        amount: int,
        allowance: int | None,
        exc: LedgerUnavailable,
    ) -> Reservation:
        if allowance is None:
            LEDGER_UNAVAILABLE.labels("reserve", "fail_closed", "refused").inc()
            raise exc
        if not self.outage.admit(tenant, request_id, amount, allowance):
            LEDGER_UNAVAILABLE.labels("reserve", "fail_open", "refused").inc()
            raise LedgerUnavailable(
                f"{exc.message}; this replica's fail-open allowance for tenant {tenant!r} "
                f"({format_usd(allowance)}) is used up"
            ) from exc
        LEDGER_UNAVAILABLE.labels("reserve", "fail_open", "admitted_locally").inc()
        return Reservation(tenant, request_id, amount, self._cached(tenant))

    # ---- settle -----------------------------------------------------------------------
    async def settle(
        self,
        tenant: str,
        request_id: str,
        actual_micros: int,
        audit: Mapping[str, str],
        *,
        tz: str = "UTC",
    ) -> tuple[WindowState, ...]:
        """Charge ``actual_micros``, drop the hold and append an entry to the audit stream.

        Charges even when the hold has expired or was never made; a second settle of one
        request id charges nothing. Returns the windows the request was reserved under
        (empty when no reservation record is left). When Redis cannot be reached (or the
        hold was admitted locally) the charge is kept and written later; the last windows
        seen are returned.
        """
        TenantKeys(self._prefix, tenant).request(request_id)
        actual = _check_micros("actual_micros", actual_micros)
        reused = sorted(set(audit) & set(AUDIT_FIELDS))
        if reused:
            raise InvalidRequest(f"audit fields {reused} are written by the ledger itself")
        local = self.outage.is_local(tenant, request_id)
        if not local:
            await self._maybe_catch_up()
            try:
                return await self._settle(tenant, request_id, actual, audit, tz, None)
            except LedgerUnavailable:
                LEDGER_UNAVAILABLE.labels("settle", "none", "journaled").inc()
        charge = PendingCharge(tenant, request_id, actual, dict(audit), tz, self._clock(), local)
        self.outage.record(charge)
        await self._maybe_catch_up(force=local)
        return self._cached(tenant)

    async def _settle(
        self,
        tenant: str,
        request_id: str,
        actual: int,
        audit: Mapping[str, str],
        tz: str,
        at_s: float | None,
    ) -> tuple[WindowState, ...]:
        keys = TenantKeys(self._prefix, tenant)
        now, now_ms = self._now(at_s)
        if at_s is None:
            spans = [self._span(w, now, tz) for w in WINDOWS]
        else:
            spans = [window_span(w, now, zone(tz)) for w in WINDOWS]
        args: list[Any] = [
            request_id,
            now_ms,
            actual,
            self._record_ttl_ms,
            self._audit_maxlen,
            tenant,
            self._gain,
            self._max_lambda,
            COUNTER_GRACE_S,
        ]
        for sp in spans:
            args += [sp.start_ms, sp.end_ms]
        for field, value in audit.items():
            args += [field, value]
        if at_s is not None:
            args += ["late", "1"]
        reply = await self._run(
            self._scripts.settle,
            [
                keys.holds,
                keys.hold_amounts,
                keys.held_total,
                keys.request(request_id),
                keys.audit,
                keys.pace,
                *(keys.spent(sp) for sp in spans),
            ],
            args,
        )
        _status, held_total, cap_pairs, lam, *spent = reply
        held = _int(held_total)
        recorded = {
            _text(cap_pairs[i]): _int(cap_pairs[i + 1]) for i in range(0, len(cap_pairs), 2)
        }
        states = tuple(
            WindowState(sp.window, sp.start, sp.end, recorded[sp.window], _int(sv), held)
            for sp, sv in zip(spans, spent, strict=True)
            if sp.window in recorded
        )
        if at_s is None:
            self._remember(tenant, states, lam)
        return states

    # ---- catching up after an outage ----------------------------------------------------
    async def _maybe_catch_up(self, *, force: bool = False) -> None:
        if not self.outage.pending:
            return
        if not force and time.monotonic() < self._next_catch_up:
            return
        await self.reconcile()

    async def reconcile(self) -> int:
        """Write the charges kept while Redis was unreachable; returns how many are left."""
        for charge in list(self.outage.pending):
            try:
                await self._settle(
                    charge.tenant,
                    charge.request_id,
                    charge.actual_micros,
                    charge.audit,
                    charge.tz,
                    charge.at_s,
                )
            except LedgerUnavailable:
                self._next_catch_up = time.monotonic() + self._retry_after_s
                break
            self.outage.written(charge)
            LEDGER_RECONCILED.inc()
        return len(self.outage.pending)

    # ---- release and reads --------------------------------------------------------------
    async def release(self, tenant: str, request_id: str) -> None:
        """Drop the request's hold without charging; a no-op if it is settled or unknown."""
        keys = TenantKeys(self._prefix, tenant)
        record = keys.request(request_id)
        if self.outage.is_local(tenant, request_id):
            self.outage.release_local(tenant, request_id)
            return
        try:
            await self._run(
                self._scripts.release,
                [keys.holds, keys.hold_amounts, keys.held_total, record],
                [request_id],
            )
        except LedgerUnavailable:
            LEDGER_UNAVAILABLE.labels("release", "none", "failed").inc()
            raise

    async def windows(
        self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC"
    ) -> tuple[WindowState, ...]:
        """The current state of every capped window; expired holds are swept first."""
        return (await self._read_state(tenant, caps, tz)).windows

    async def state(self, tenant: str, caps: Mapping[str, int], *, tz: str = "UTC") -> LedgerState:
        """Windows and pacing λ; when Redis is unreachable, the last state seen (``stale``)."""
        try:
            return await self._read_state(tenant, caps, tz)
        except LedgerUnavailable:
            last = self.outage.last_state.get(tenant)
            if last is None:
                LEDGER_UNAVAILABLE.labels("state", "none", "failed").inc()
                raise
            LEDGER_UNAVAILABLE.labels("state", "none", "cached").inc()
            return LedgerState(last.windows, last.pacing_lambda_per_usd, stale=True)

    async def _read_state(self, tenant: str, caps: Mapping[str, int], tz: str) -> LedgerState:
        keys = TenantKeys(self._prefix, tenant)
        capped = _check_caps(caps)
        await self._maybe_catch_up()
        now, now_ms = self._now()
        spans = [self._span(w, now, tz) for w, _ in capped]
        reply = await self._run(
            self._scripts.state,
            [keys.holds, keys.hold_amounts, keys.held_total, keys.pace, *map(keys.spent, spans)],
            [now_ms],
        )
        held_total, lam, *spent = reply
        local = self.outage.local_held(tenant)
        states = self._states(spans, [c for _, c in capped], spent, _int(held_total) + local)
        self._remember(tenant, states, lam)
        return LedgerState(states, float(_text(lam)))

    async def ping(self) -> bool:
        """True when Redis answers; False (never an exception) when it cannot be reached."""
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

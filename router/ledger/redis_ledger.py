"""``RedisLedger``: the per-tenant budget ledger on Redis, one Lua script per operation.

Holds are kept per tenant in a sorted set scored by expiry plus a hash of amounts; a hold
whose expiry has passed is swept by the next ``reserve`` or ``windows`` call, so a caller
that crashed frees its hold by itself. Each request id has a record (its state, held
amount and the caps it was admitted under) that makes ``reserve``, ``settle`` and
``release`` idempotent for ``record_ttl_s``. ``settle`` charges every window's counter,
capped or not, so a cap added later already sees the spend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import redis.asyncio as aredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from router.core.types import Reservation, WindowState
from router.errors import ConfigError, InvalidRequest, LedgerUnavailable
from router.ledger.keys import TenantKeys
from router.ledger.refusal import budget_exceeded
from router.ledger.scripts import LedgerScripts
from router.ledger.windows import (
    WINDOWS,
    WindowSpan,
    check_window,
    counter_ttl_s,
    utc_from_timestamp,
    window_span,
)

#: Hold keys and request records outlive the last hold by this much.
HOLD_GRACE_MS = 3_600_000
#: Fields every audit entry has; ``settle``'s ``audit`` mapping may not reuse them.
AUDIT_FIELDS = ("request_id", "tenant", "micros", "held", "ts")
_URL_SCHEMES = ("redis://", "rediss://", "unix://")
#: Amounts stay exact in Lua (doubles) below 2**53 micro-dollars, about $9 billion.
MAX_MICROS = 2**53 - 1
MAX_HOLD_TTL_S = 7 * 86_400.0


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


def redis_address(client: aredis.Redis) -> str:
    """Where ``client`` connects, as a URL without user name or password."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        return f"unix://{kw.get('path', '')}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


class RedisLedger:
    """The ``router.core.protocols.Ledger`` on Redis (also Redis Cluster: keys share a tag).

    ``clock`` returns Unix seconds; it decides window boundaries and hold expiry, so tests
    can move time. ``aclose`` closes the client only when ``from_url`` made it.
    """

    def __init__(
        self,
        client: aredis.Redis,
        *,
        key_prefix: str = "ttc",
        clock: Callable[[], float] = time.time,
        record_ttl_s: float = 86_400.0,
        audit_maxlen: int = 1_000_000,
    ) -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ConfigError(f"key_prefix {key_prefix!r} must be non-empty without braces")
        if record_ttl_s <= 0 or audit_maxlen <= 0:
            raise ConfigError("record_ttl_s and audit_maxlen must be positive")
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        self._record_ttl_ms = math.ceil(record_ttl_s * 1000)
        self._audit_maxlen = audit_maxlen
        self._scripts = LedgerScripts.register(client)
        self._address = redis_address(client)
        self._owns_client = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "ttc",
        clock: Callable[[], float] = time.time,
        record_ttl_s: float = 86_400.0,
        audit_maxlen: int = 1_000_000,
        **client_kw: Any,
    ) -> RedisLedger:
        """A ledger on a new client for ``redis://``, ``rediss://`` or ``unix://`` ``url``.

        ``client_kw`` go to ``redis.asyncio.from_url``; by default connects and reads time
        out after 2 s and a failed command is retried 3 times within about half a second.
        """
        if not url.startswith(_URL_SCHEMES):
            scheme = url.split(":", 1)[0]
            raise ConfigError(
                f"Redis URL must start with one of {', '.join(_URL_SCHEMES)}, not {scheme!r}"
            )
        client_kw.setdefault("socket_connect_timeout", 2.0)
        client_kw.setdefault("socket_timeout", 2.0)
        client_kw.setdefault("retry", Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), 3))
        try:
            client = aredis.from_url(url, **client_kw)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"invalid Redis URL or client option: {e}") from e
        ledger = cls(
            client,
            key_prefix=key_prefix,
            clock=clock,
            record_ttl_s=record_ttl_s,
            audit_maxlen=audit_maxlen,
        )
        ledger._owns_client = True
        return ledger

    @property
    def address(self) -> str:
        """The Redis this ledger talks to, without credentials."""
        return self._address

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
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as e:
            raise LedgerUnavailable(
                f"budget ledger at {self._address} failed: {type(e).__name__}: {e}"
            ) from e

    def _now(self) -> tuple[datetime, int]:
        ts = self._clock()
        return utc_from_timestamp(ts), math.floor(ts * 1000)

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

    async def reserve(
        self,
        tenant: str,
        request_id: str,
        amount_micros: int,
        caps: Mapping[str, int],
        hold_ttl_s: float,
    ) -> Reservation:
        """Hold ``amount_micros`` for ``hold_ttl_s`` if every capped window can cover it.

        A repeated ``request_id`` returns the first admission unchanged (``replayed=True``),
        even after its hold was settled, released or expired. Raises ``BudgetExceeded``
        (holding nothing) when some window cannot cover the amount.
        """
        keys = TenantKeys(self._prefix, tenant)
        record = keys.request(request_id)
        amount = _check_micros("amount_micros", amount_micros)
        capped = _check_caps(caps)
        if not 0 < hold_ttl_s <= MAX_HOLD_TTL_S:
            raise InvalidRequest(
                f"hold_ttl_s must be above 0 and at most {MAX_HOLD_TTL_S:.0f} s, got {hold_ttl_s!r}"
            )
        now, now_ms = self._now()
        spans = [window_span(w, now) for w, _ in capped]
        hold_ms = math.ceil(hold_ttl_s * 1000)
        args: list[Any] = [
            request_id,
            now_ms,
            amount,
            now_ms + hold_ms,
            max(self._record_ttl_ms, hold_ms + HOLD_GRACE_MS),
            hold_ms + HOLD_GRACE_MS,
        ]
        for w, cap in capped:
            args += [w, cap]
        reply = await self._run(
            self._scripts.reserve,
            [keys.holds, keys.hold_amounts, keys.held_total, record, *map(keys.spent, spans)],
            args,
        )
        status, held_amount, held_total, *spent = reply
        states = self._states(spans, [c for _, c in capped], spent, _int(held_total))
        if _text(status) == "refused":
            raise budget_exceeded(tenant, amount, states)
        return Reservation(
            tenant=tenant,
            request_id=request_id,
            held_micros=_int(held_amount),
            windows=states,
            replayed=_text(status) == "replayed",
        )

    async def settle(
        self,
        tenant: str,
        request_id: str,
        actual_micros: int,
        audit: Mapping[str, str],
    ) -> tuple[WindowState, ...]:
        """Charge ``actual_micros``, drop the hold and append an entry to the audit stream.

        Charges even when the hold has expired or was never made; a second settle of one
        request id charges nothing. Returns the windows the request was reserved under
        (empty when no reservation record is left).
        """
        keys = TenantKeys(self._prefix, tenant)
        record = keys.request(request_id)
        actual = _check_micros("actual_micros", actual_micros)
        reused = sorted(set(audit) & set(AUDIT_FIELDS))
        if reused:
            raise InvalidRequest(f"audit fields {reused} are written by the ledger itself")
        now, now_ms = self._now()
        spans = [window_span(w, now) for w in WINDOWS]
        args: list[Any] = [
            request_id,
            now_ms,
            actual,
            self._record_ttl_ms,
            self._audit_maxlen,
            tenant,
            *(counter_ttl_s(sp, now) for sp in spans),
        ]
        for field, value in audit.items():
            args += [field, value]
        reply = await self._run(
            self._scripts.settle,
            [
                keys.holds,
                keys.hold_amounts,
                keys.held_total,
                record,
                keys.audit,
                *map(keys.spent, spans),
            ],
            args,
        )
        _status, held_total, cap_pairs, *spent = reply
        held = _int(held_total)
        recorded = {
            _text(cap_pairs[i]): _int(cap_pairs[i + 1]) for i in range(0, len(cap_pairs), 2)
        }
        return tuple(
            WindowState(sp.window, sp.start, sp.end, recorded[sp.window], _int(sv), held)
            for sp, sv in zip(spans, spent, strict=True)
            if sp.window in recorded
        )

    async def release(self, tenant: str, request_id: str) -> None:
        """Drop the request's hold without charging; a no-op if it is settled or unknown."""
        keys = TenantKeys(self._prefix, tenant)
        await self._run(
            self._scripts.release,
            [keys.holds, keys.hold_amounts, keys.held_total, keys.request(request_id)],
            [request_id],
        )

    async def windows(self, tenant: str, caps: Mapping[str, int]) -> tuple[WindowState, ...]:
        """The current state of every capped window; expired holds are swept first."""
        keys = TenantKeys(self._prefix, tenant)
        capped = _check_caps(caps)
        now, now_ms = self._now()
        spans = [window_span(w, now) for w, _ in capped]
        reply = await self._run(
            self._scripts.state,
            [keys.holds, keys.hold_amounts, keys.held_total, *map(keys.spent, spans)],
            [now_ms],
        )
        held_total, *spent = reply
        return self._states(spans, [c for _, c in capped], spent, _int(held_total))

    async def ping(self) -> bool:
        """True when Redis answers; False (never an exception) when it cannot be reached."""
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

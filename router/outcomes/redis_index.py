"""Each decision's tenant, arm and predictions, kept in Redis so any replica can accept its
score and compare it with what was predicted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.core.protocols import RememberedDecision
from router.errors import LedgerUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

DECISION_TTL_S = 30 * 24 * 3600


def decision_key(prefix: str, decision_id: str) -> str:
    return f"{prefix}:decision:{decision_id}"


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _number(raw: object | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(_text(raw))
    except ValueError:
        return None


class RedisDecisionIndex:
    """One hash per decision (``tenant``, ``arm``, ``p_success``, ``predicted_cost_usd``),
    expiring ``ttl_s`` after it was last written."""

    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str = "ttc", ttl_s: int = DECISION_TTL_S
    ) -> None:
        self.client = client
        self.prefix = key_prefix
        self.ttl_s = ttl_s

    async def remember(
        self,
        decision_id: str,
        tenant: str,
        arm: str,
        *,
        p_success: float,
        predicted_cost_usd: float,
    ) -> None:
        import redis.exceptions

        try:
            key = decision_key(self.prefix, decision_id)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key,
                    mapping={
                        "tenant": tenant,
                        "arm": arm,
                        "p_success": repr(float(p_success)),
                        "predicted_cost_usd": repr(float(predicted_cost_usd)),
                    },
                )
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise LedgerUnavailable(f"cannot record the decision in Redis: {exc}") from exc

    async def lookup(self, decision_id: str) -> RememberedDecision | None:
        import redis.exceptions

        try:
            raw = await self.client.hgetall(decision_key(self.prefix, decision_id))
        except redis.exceptions.RedisError as exc:
            raise LedgerUnavailable(f"cannot look up the decision in Redis: {exc}") from exc
        fields = {_text(k): v for k, v in raw.items()}
        if "tenant" not in fields:
            return None
        return RememberedDecision(
            tenant=_text(fields["tenant"]),
            arm=_text(fields.get("arm", "")),
            p_success=_number(fields.get("p_success")),
            predicted_cost_usd=_number(fields.get("predicted_cost_usd")),
        )

    async def owner(self, decision_id: str) -> str | None:
        """The tenant that owns ``decision_id``, or None when it is unknown or expired."""
        found = await self.lookup(decision_id)
        return found.tenant if found is not None else None

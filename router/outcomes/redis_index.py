"""Which tenant owns a decision id, kept in Redis so any replica can accept its score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.errors import LedgerUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

DECISION_TTL_S = 30 * 24 * 3600


def decision_key(prefix: str, decision_id: str) -> str:
    return f"{prefix}:decision:{decision_id}"


class RedisDecisionIndex:
    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str = "ttc", ttl_s: int = DECISION_TTL_S
    ) -> None:
        self.client = client
        self.prefix = key_prefix
        self.ttl_s = ttl_s

    async def remember(self, decision_id: str, tenant: str, arm: str) -> None:
        import redis.exceptions

        try:
            key = decision_key(self.prefix, decision_id)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"tenant": tenant, "arm": arm})
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise LedgerUnavailable(f"cannot record the decision in Redis: {exc}") from exc

    async def owner(self, decision_id: str) -> str | None:
        import redis.exceptions

        try:
            raw = await self.client.hget(decision_key(self.prefix, decision_id), "tenant")
        except redis.exceptions.RedisError as exc:
            raise LedgerUnavailable(f"cannot look up the decision in Redis: {exc}") from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

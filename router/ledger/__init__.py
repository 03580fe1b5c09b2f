"""The per-tenant budget ledger on Redis: reserve, settle, release, window states."""

from router.ledger.embedded import EmbeddedRedis, start_embedded_redis
from router.ledger.redis_ledger import RedisLedger
from router.ledger.windows import WINDOWS

__all__ = ["WINDOWS", "EmbeddedRedis", "RedisLedger", "start_embedded_redis"]

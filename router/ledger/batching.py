"""Script calls from many concurrent requests sent to Redis as one pipeline per round trip.

While one pipeline is on the wire, new calls queue up; the next pipeline carries all of them.
A lone call goes out at once (no timer), so batching adds no latency at low load and turns
N round trips into one at high load. A script missing from Redis's cache (restart,
failover, ``SCRIPT FLUSH``) is run again through redis-py's script object, which loads it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 256


@dataclass
class _Call:
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


class ScriptBatcher:
    """Pipelines ``EVALSHA`` calls on ``client`` (a non-cluster ``redis.asyncio.Redis``)."""

    def __init__(self, client: Any, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(script, keys, args, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                await self._send(batch)
            except BaseException as exc:
                for c in batch:
                    if not c.future.done():
                        c.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, batch: list[_Call]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for c in batch:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        results = await pipe.execute(raise_on_error=False)
        missing: list[_Call] = []
        for c, r in zip(batch, results, strict=True):
            if isinstance(r, NoScriptError):
                missing.append(c)
            elif c.future.done():
                continue
            elif isinstance(r, Exception):
                c.future.set_exception(r)
            else:
                c.future.set_result(r)
        for c in missing:
            try:
                r = await c.script(keys=c.keys, args=c.args)
            except Exception as exc:
                if not c.future.done():
                    c.future.set_exception(exc)
            else:
                if not c.future.done():
                    c.future.set_result(r)

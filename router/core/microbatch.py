"""Groups concurrent single-item calls into batched calls of a blocking function.

Callers ``await submit(item)``. Items wait in arrival order; a batch is cut when it holds
``max_batch`` items or when its oldest item has waited ``max_wait_ms``. One batch runs at a
time, in the executor (by default a private single worker thread), so the event loop never
blocks; items that arrive meanwhile form the next batch, which grows under load.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from router.errors import InvalidRequest, Overloaded, RouterError, Unavailable

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatcherStats:
    """Counters since start: batches run, items in them, the largest batch, failed batches."""

    batches: int
    items: int
    max_batch_seen: int
    failed_batches: int
    pending: int


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Batches concurrent ``submit`` calls into calls of ``fn(list[T]) -> list[R]``.

    ``fn`` must return one result per item, in order. If it raises, every caller of that
    batch gets the exception. A caller that is cancelled is dropped from its batch (or
    ignored if its batch is already running) without affecting the others. ``max_pending``
    bounds the items waiting; past it ``submit`` raises ``Overloaded``.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        executor: concurrent.futures.Executor | None = None,
        max_pending: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise InvalidRequest(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise InvalidRequest(f"max_wait_ms must not be negative, got {max_wait_ms}")
        if max_pending is not None and max_pending < 1:
            raise InvalidRequest(f"max_pending must be at least 1, got {max_pending}")
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_pending = max_pending
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor = (
            executor
            if executor is not None
            else concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="microbatch"
            )
        )
        self._pending: deque[_Waiting[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._batches = 0
        self._items = 0
        self._max_seen = 0
        self._failed = 0

    @property
    def stats(self) -> BatcherStats:
        return BatcherStats(
            batches=self._batches,
            items=self._items,
            max_batch_seen=self._max_seen,
            failed_batches=self._failed,
            pending=len(self._pending),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, item: T) -> R:
        """The result of ``fn`` for ``item``, computed in a batch with concurrent submits."""
        if self._closed:
            raise Unavailable("the batcher is closed")
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            raise Overloaded(f"{len(self._pending)} items already wait for a batch; retry later")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._run(), name="microbatch-worker")
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Waiting(item, future, time.monotonic()))
        self._arrived.set()
        return await future

    async def aclose(self) -> None:
        """Refuse new items, finish the ones already submitted, release the worker thread."""
        self._closed = True
        self._arrived.set()
        if self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        try:
            while True:
                while not self._pending:
                    if self._closed:
                        return
                    self._arrived.clear()
                    await self._arrived.wait()
                await self._fill_batch()
                batch = self._take_batch()
                if batch:
                    await self._execute(batch)
        finally:
            self._closed = True
            self._fail_all(list(self._pending))
            self._pending.clear()

    @staticmethod
    def _fail_all(waiting: list[_Waiting[T, R]]) -> None:
        for w in waiting:
            if not w.future.done():
                w.future.set_exception(Unavailable("the batcher stopped before this item ran"))

    async def _fill_batch(self) -> None:
        """Wait until a full batch is queued or the oldest item has waited long enough."""
        deadline = self._pending[0].enqueued + self._max_wait_s
        while len(self._pending) < self._max_batch and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Waiting[T, R]]:
        batch: list[_Waiting[T, R]] = []
        while self._pending and len(batch) < self._max_batch:
            waiting = self._pending.popleft()
            if not waiting.future.done():
                batch.append(waiting)
        return batch

    async def _execute(self, batch: list[_Waiting[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        items = [w.item for w in batch]
        self._batches += 1
        self._items += len(batch)
        self._max_seen = max(self._max_seen, len(batch))
        try:
            results = await loop.run_in_executor(self._executor, self._fn, items)
            if len(results) != len(items):
                raise RouterError(
                    f"the batch function returned {len(results)} results for {len(items)} items"
                )
        except asyncio.CancelledError:
            self._fail_all(batch)
            raise
        except Exception as exc:
            self._failed += 1
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        for w, result in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(result)

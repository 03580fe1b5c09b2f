"""MicroBatcher: grouping, limits, error delivery, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from router.core.microbatch import MicroBatcher
from router.errors import InvalidRequest, Overloaded, RouterError, Unavailable


class Recorder:
    """A batch function that doubles its items and remembers each batch it saw."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [2 * i for i in items]


class Gate:
    """A batch function that blocks until released, to hold a batch in flight."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        if not self.release.wait(timeout=5):
            raise TimeoutError("gate never released")
        return [i + 100 for i in items]


async def _wait_for(flag: threading.Event) -> None:
    assert await asyncio.to_thread(flag.wait, 5)


async def test_concurrent_submits_are_grouped() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=32, max_wait_ms=50)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    await batcher.aclose()
    assert results == [2 * i for i in range(20)]
    assert sorted(i for b in fn.batches for i in b) == list(range(20))
    assert max(len(b) for b in fn.batches) > 1
    assert len(fn.batches) < 20
    stats = batcher.stats
    assert stats.items == 20
    assert stats.batches == len(fn.batches)
    assert stats.max_batch_seen == max(len(b) for b in fn.batches)
    assert stats.failed_batches == 0


async def test_items_keep_their_own_results_in_arrival_order() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_ms=5)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.aclose()
    assert results == [2 * i for i in range(10)]
    assert [i for b in fn.batches for i in b] == list(range(10))


async def test_max_batch_is_respected() -> None:
    fn = Recorder(delay_s=0.01)
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait_ms=20)
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(batcher.submit(i) for i in range(100)))
    await batcher.aclose()
    assert results == [2 * i for i in range(100)]
    sizes = [len(b) for b in fn.batches]
    assert max(sizes) == 8
    assert sum(sizes) == 100
    assert batcher.stats.max_batch_seen == 8


async def test_items_arriving_during_a_run_form_the_next_batch() -> None:
    gate = Gate()
    batcher: MicroBatcher[int, int] = MicroBatcher(gate, max_batch=16, max_wait_ms=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await _wait_for(gate.started)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.release.set()
    async with asyncio.timeout(5):
        assert await first == 100
        assert await asyncio.gather(*later) == [101, 102, 103, 104, 105]
    await batcher.aclose()
    assert gate.batches == [[0], [1, 2, 3, 4, 5]]


async def test_items_arriving_within_max_wait_share_a_batch() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=32, max_wait_ms=300)
    tasks = []
    for i in range(4):
        tasks.append(asyncio.ensure_future(batcher.submit(i)))
        await asyncio.sleep(0.02)
    async with asyncio.timeout(5):
        assert await asyncio.gather(*tasks) == [0, 2, 4, 6]
    await batcher.aclose()
    assert fn.batches == [[0, 1, 2, 3]]


async def test_lone_item_is_flushed_after_max_wait() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=32, max_wait_ms=30)
    start = time.monotonic()
    async with asyncio.timeout(5):
        assert await batcher.submit(7) == 14
    elapsed = time.monotonic() - start
    await batcher.aclose()
    assert elapsed >= 0.025
    assert fn.batches == [[7]]


async def test_full_batch_does_not_wait_for_the_timer() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_ms=2000)
    start = time.monotonic()
    async with asyncio.timeout(5):
        assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 2, 4, 6]
    await batcher.aclose()
    assert time.monotonic() - start < 1.0
    assert fn.batches == [[0, 1, 2, 3]]


async def test_fn_runs_off_the_event_loop() -> None:
    fn = Recorder(delay_s=0.3)
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_ms=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.ensure_future(ticker())
    async with asyncio.timeout(5):
        assert await batcher.submit(3) == 6
    tick_task.cancel()
    await batcher.aclose()
    assert threading.get_ident() not in fn.threads
    assert ticks >= 10


async def test_given_executor_is_used_and_left_open() -> None:
    fn = Recorder()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="given") as pool:
        names: list[str] = []

        def named(items: list[int]) -> list[int]:
            names.append(threading.current_thread().name)
            return fn(items)

        batcher: MicroBatcher[int, int] = MicroBatcher(named, executor=pool)
        async with asyncio.timeout(5):
            assert await batcher.submit(1) == 2
        await batcher.aclose()
        assert names and names[0].startswith("given")
        assert pool.submit(lambda: 5).result(timeout=5) == 5


async def test_error_reaches_every_caller_of_the_batch() -> None:
    seen: list[list[int]] = []

    def failing(items: list[int]) -> list[int]:
        seen.append(list(items))
        if 13 in items:
            raise ValueError("unlucky batch")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(failing, max_batch=8, max_wait_ms=50)
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in (11, 12, 13, 14)), return_exceptions=True
        )
    assert seen == [[11, 12, 13, 14]]
    assert all(isinstance(o, ValueError) and str(o) == "unlucky batch" for o in outcomes)
    async with asyncio.timeout(5):
        assert await batcher.submit(5) == 5
    await batcher.aclose()
    assert batcher.stats.failed_batches == 1
    assert batcher.stats.batches == 2


async def test_wrong_number_of_results_is_an_error_for_all() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items[:1], max_wait_ms=20)
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(
            batcher.submit(1), batcher.submit(2), return_exceptions=True
        )
    await batcher.aclose()
    assert all(isinstance(o, RouterError) for o in outcomes)


async def test_cancelled_caller_during_run_leaves_others_intact() -> None:
    gate = Gate()
    batcher: MicroBatcher[int, int] = MicroBatcher(gate, max_batch=8, max_wait_ms=20)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await _wait_for(gate.started)
    tasks[1].cancel()
    gate.release.set()
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] == 100
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert outcomes[2] == 102
    async with asyncio.timeout(5):
        assert await batcher.submit(9) == 109
    await batcher.aclose()


async def test_caller_cancelled_while_waiting_is_left_out_of_the_batch() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait_ms=100)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    tasks[2].cancel()
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await batcher.aclose()
    assert outcomes[0] == 0 and outcomes[1] == 2 and outcomes[3] == 6
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert fn.batches == [[0, 1, 3]]


async def test_closed_batcher_refuses_new_items() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn)
    async with asyncio.timeout(5):
        assert await batcher.submit(1) == 2
    await batcher.aclose()
    assert batcher.closed
    with pytest.raises(Unavailable):
        await batcher.submit(2)
    await batcher.aclose()


async def test_close_finishes_items_already_submitted() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_ms=1000)
    tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        await batcher.aclose()
        assert await asyncio.gather(*tasks) == [0, 2, 4, 6, 8, 10]


async def test_close_before_any_submit() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Recorder())
    await batcher.aclose()
    with pytest.raises(Unavailable):
        await batcher.submit(1)


async def test_queue_bound_raises_overloaded() -> None:
    gate = Gate()
    batcher: MicroBatcher[int, int] = MicroBatcher(gate, max_batch=2, max_wait_ms=1, max_pending=3)
    running = asyncio.ensure_future(batcher.submit(0))
    await _wait_for(gate.started)
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit(4)
    gate.release.set()
    async with asyncio.timeout(5):
        assert await running == 100
        assert await asyncio.gather(*queued) == [101, 102, 103]
    await batcher.aclose()


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch": 0}, {"max_wait_ms": -1.0}, {"max_pending": 0}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRequest):
        MicroBatcher(Recorder(), **kwargs)  # type: ignore[arg-type]

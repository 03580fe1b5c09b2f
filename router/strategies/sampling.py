"""Run k samples of one prompt on one backend and collect them as they finish.

``SampleRun`` is the engine under the sampling strategies (``vote``, ``short``, ``best``):

.. code-block:: python

    async with SampleRun(backend, template, k, parallel=None) as run:
        async for result in run:  # SampleResults in the order they finish
            if decided(result):
                await run.cancel()  # stops the samples still running, on the server too
                break
    usage = run.usage()

How the samples are sent: when the backend takes ``n`` samples per request
(``backend.max_n >= k``, k > 1) and ``parallel`` does not ask for fewer in flight, one request
with ``n=k`` and the template's seed; otherwise one request per sample with seeds
``template.seed + i`` (0..k-1 for the default template), at most ``parallel`` at a time
(the next sample starts when one finishes). Either way every ``SampleResult`` yielded carries
its sample number (0..k-1) as ``index``. Results that finish at the same moment are yielded in
index order, so a run against a deterministic backend is deterministic.

Failures: a failure of any sample (``BackendError``) stops the run: the samples still running
are cancelled and the error is raised from the iteration. What was spent so far stays counted
in ``usage()``.

Time: ``template.timeout_s`` is the time left when the run starts; a sample that starts later
(``parallel`` < k) gets what is left then, and one that would start with no time left fails
with ``BackendTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType

from router.backends.common import CHARS_PER_TOKEN
from router.core.protocols import Backend
from router.core.types import SampleRequest, SampleResult, TextDelta, TierUsage
from router.errors import BackendError, BackendTimeout


def estimate_tokens(chars: int) -> int:
    """Tokens in ``chars`` characters of text, at about four characters a token."""
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


class _State(enum.Enum):
    PENDING = "pending"  # not sent (waiting for a slot, or never started)
    RUNNING = "running"  # sent, no result yet
    FINISHED = "finished"
    CANCELLED = "cancelled"  # sent, then cancelled before its result
    FAILED = "failed"


class _WorkerDone:
    """Put on the queue by a worker that will produce nothing more."""


_DONE = _WorkerDone()
_Event = SampleResult | Exception | _WorkerDone


class SampleRun:
    """k samples of ``template.prompt`` on ``backend``; see the module docstring.

    ``template`` gives everything but ``n`` and ``seed`` (temperature, max_tokens, stop, …).
    ``parallel`` caps the samples in flight at once (None: all k). ``batch=False`` keeps one
    request per sample even where the backend could return all k from one: a caller that may
    stop early needs each sample's exact usage as it finishes and to cancel the others one by
    one, while a multi-choice response reports usage only at its end. Use it as an async
    context manager; leaving the block cancels every sample still running.
    """

    def __init__(
        self,
        backend: Backend,
        template: SampleRequest,
        k: int,
        parallel: int | None = None,
        *,
        batch: bool = True,
    ) -> None:
        if k < 1:
            raise ValueError(f"a sample run needs k >= 1, got {k}")
        if parallel is not None and parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.backend = backend
        self.template = template
        self.k = k
        self.batched = (
            batch and k > 1 and backend.max_n >= k and (parallel is None or parallel >= k)
        )
        self._width = 1 if self.batched else min(parallel or k, k)
        self._state = [_State.PENDING] * k
        self._chars = [0] * k
        self._results: dict[int, SampleResult] = {}
        self._failures: list[tuple[Exception, tuple[int, ...]]] = []
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._buffer: deque[SampleResult] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._next = 0
        self._sent = 0
        self._workers_left = 0
        self._halt = False  # no new samples start (a failure, or cancel)
        self._stopped = False  # iteration is over (cancel, or a failure was raised)
        self._entered = False
        self._started_at = 0.0

    # ---- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self) -> SampleRun:
        if self._entered:
            raise RuntimeError("a SampleRun can be entered only once")
        self._entered = True
        self._started_at = time.monotonic()
        if self.batched:
            self._tasks = [asyncio.create_task(self._batch())]
        else:
            self._tasks = [asyncio.create_task(self._worker()) for _ in range(self._width)]
        self._workers_left = len(self._tasks)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        """Stop every sample still running (closing its stream cancels it on the server)
        and start no more; iteration ends. Safe to call more than once."""
        self._halt = True
        self._stopped = True
        self._buffer.clear()
        running = [t for t in self._tasks if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    # ---- iteration ----------------------------------------------------------------------
    def __aiter__(self) -> SampleRun:
        return self

    async def __anext__(self) -> SampleResult:
        if not self._entered:
            raise RuntimeError("iterate a SampleRun inside 'async with SampleRun(...) as run'")
        while not self._buffer:
            if self._stopped or self._workers_left == 0:
                raise StopAsyncIteration
            events = [await self._queue.get()]
            while not self._queue.empty():
                events.append(self._queue.get_nowait())
            finished: list[SampleResult] = []
            error: Exception | None = None
            for event in events:
                if isinstance(event, _WorkerDone):
                    self._workers_left -= 1
                elif isinstance(event, SampleResult):
                    finished.append(event)
                elif error is None:
                    error = event
            self._buffer.extend(sorted(finished, key=lambda r: r.index))
            if error is not None:
                await self.cancel()
                raise error
        return self._buffer.popleft()

    # ---- accounting ---------------------------------------------------------------------
    @property
    def started(self) -> int:
        """Samples whose request was sent."""
        return self._sent

    @property
    def finished(self) -> int:
        return len(self._results)

    @property
    def cancelled(self) -> int:
        """Samples cancelled after they were sent (before their result arrived)."""
        return self._state.count(_State.CANCELLED)

    @property
    def failed(self) -> int:
        return self._state.count(_State.FAILED)

    def results(self) -> list[SampleResult]:
        """Every finished sample, by index."""
        return [self._results[i] for i in sorted(self._results)]

    def usage(self) -> TierUsage:
        """Tokens spent so far on the backend's tier.

        Finished samples count what the backend reported. A sample cancelled in flight
        counts the input tokens a finished sibling reported (else about a token per four
        characters of prompt) and about a token per four characters of the text it had
        streamed. A failed sample counts the same, using the error's
        ``partial_output_tokens`` when that is larger, but only if it had produced output:
        one that failed before producing anything is not charged. Any such count sets
        ``estimated``.
        """
        done = self.results()
        input_tokens = sum(r.input_tokens for r in done)
        output_tokens = sum(r.output_tokens for r in done)
        estimated = any(r.usage_estimated for r in done)
        if done:
            sibling_input = done[0].input_tokens
        else:
            prompt_chars = len(self.template.prompt) + len(self.template.continuation)
            sibling_input = estimate_tokens(prompt_chars)
        for i, state in enumerate(self._state):
            if state in (_State.RUNNING, _State.CANCELLED):
                input_tokens += sibling_input
                output_tokens += estimate_tokens(self._chars[i])
                estimated = True
        for exc, slots in self._failures:
            streamed = sum(estimate_tokens(self._chars[i]) for i in slots)
            reported = exc.partial_output_tokens if isinstance(exc, BackendError) else 0
            produced = max(streamed, reported)
            if produced > 0 and slots:
                input_tokens += sibling_input * len(slots)
                output_tokens += produced
                estimated = True
        return TierUsage(
            self.backend.tier, input_tokens, output_tokens, self._sent, estimated=estimated
        )

    # ---- workers ------------------------------------------------------------------------
    def _time_left(self) -> float | None:
        if self.template.timeout_s is None:
            return None
        return self.template.timeout_s - (time.monotonic() - self._started_at)

    async def _worker(self) -> None:
        """Runs samples one after another, taking the next unstarted one each time."""
        try:
            while not self._halt and self._next < self.k:
                i = self._next
                self._next += 1
                left = self._time_left()
                if left is not None and left <= 0:
                    self._state[i] = _State.RUNNING
                    self._fail(
                        BackendTimeout(
                            f"tier {self.backend.tier!r}: no time left to start sample {i}"
                        ),
                        (i,),
                    )
                    return
                request = replace(self.template, n=1, seed=self.template.seed + i, timeout_s=left)
                if not await self._consume(request, (i,)):
                    return
                # Let the consumer see the result first: it may stop the run, and then the
                # next sample is never sent.
                await asyncio.sleep(0)
        finally:
            self._queue.put_nowait(_DONE)

    async def _batch(self) -> None:
        """Runs all k samples as one request with ``n=k``."""
        try:
            request = replace(self.template, n=self.k, timeout_s=self._time_left())
            await self._consume(request, range(self.k))
        finally:
            self._queue.put_nowait(_DONE)

    async def _consume(self, request: SampleRequest, slots: Sequence[int]) -> bool:
        """Stream one request whose sample j is run sample ``slots[j]``; False if it failed."""
        for i in slots:
            self._state[i] = _State.RUNNING
        self._sent += len(slots)
        tier = self.backend.tier
        try:
            async with contextlib.aclosing(self.backend.stream(request)) as events:
                async for event in events:
                    j = event.index
                    if not 0 <= j < len(slots):
                        raise BackendError(
                            f"tier {tier!r} sent sample index {j} for a request of "
                            f"{len(slots)} sample(s)"
                        )
                    i = slots[j]
                    if isinstance(event, TextDelta):
                        self._chars[i] += len(event.text)
                    elif self._state[i] is _State.RUNNING:
                        self._finish(i, replace(event, index=i))
                    else:
                        raise BackendError(f"tier {tier!r} sent two results for sample {j}")
            missing = [i for i in slots if self._state[i] is _State.RUNNING]
            if missing:
                raise BackendError(f"tier {tier!r} ended its stream without a final result")
        except asyncio.CancelledError:
            for i in slots:
                if self._state[i] is _State.RUNNING:
                    self._state[i] = _State.CANCELLED
            raise
        except Exception as exc:  # a Backend raises only BackendError; anything else is a bug
            self._fail(exc, slots)
            return False
        return True

    def _finish(self, i: int, result: SampleResult) -> None:
        self._state[i] = _State.FINISHED
        self._results[i] = result
        self._queue.put_nowait(result)

    def _fail(self, exc: Exception, slots: Sequence[int]) -> None:
        lost = tuple(i for i in slots if self._state[i] is _State.RUNNING)
        for i in lost:
            self._state[i] = _State.FAILED
        self._failures.append((exc, lost))
        self._halt = True
        self._queue.put_nowait(exc)

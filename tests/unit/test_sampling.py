"""SampleRun: k samples as one n-request or k requests, finish order, cancellation, usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence

import pytest

from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout
from router.strategies.sampling import SampleRun, estimate_tokens

SLOW = 30.0  # seconds: a sample this slow only ends by being cancelled


class FakeSampler:
    """A backend whose sample s answers ``texts[s]``, streamed in ``chunks`` deltas spread
    evenly over ``delays[s]`` seconds, the result at ``delays[s]``.

    Sample s is the request's seed for a one-sample request and ``seed + j`` for index j of
    an n-sample request, so both paths see the same answers. ``fail_at[s] = c`` raises a
    BackendError (with ``partial`` output tokens) before delta c of sample s, once
    ``fail_gate`` (if given) is set. Records the
    requests, the samples started, finished and cancelled (by GeneratorExit or
    CancelledError), the characters streamed per sample and the most samples in flight.
    Reported usage: ``input_tokens`` in, a token per four characters out.
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        tier: str = "cheap",
        delays: Sequence[float] | None = None,
        max_n: int = 1,
        input_tokens: int = 10,
        chunks: int = 4,
        fail_at: Mapping[int, int] | None = None,
        partial: int = 0,
        fail_gate: asyncio.Event | None = None,
    ) -> None:
        self._tier = tier
        self.texts = list(texts)
        self.delays = list(delays) if delays is not None else [0.0] * len(texts)
        self._max_n = max_n
        self.input_tokens = input_tokens
        self.chunks = chunks
        self.fail_at = dict(fail_at or {})
        self.partial = partial
        self.fail_gate = fail_gate
        self.requests: list[SampleRequest] = []
        self.started: list[int] = []
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.streamed: dict[int, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.progress = asyncio.Event()  # set each time a sample finishes

    @property
    def tier(self) -> str:
        return self._tier

    @property
    def max_n(self) -> int:
        return self._max_n

    def output_tokens(self, sample: int) -> int:
        return estimate_tokens(len(self.texts[sample]))

    def _pieces(self, text: str) -> list[str]:
        size = max(1, -(-len(text) // self.chunks))
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        self.requests.append(request)
        if request.n > self._max_n:
            raise BackendError(f"asked for n={request.n}, more than max_n={self._max_n}")
        samples = [request.seed + j for j in range(request.n)]
        events: list[tuple[float, int, int, str | None]] = []
        for j, s in enumerate(samples):
            pieces = self._pieces(self.texts[s])
            d = self.delays[s]
            for c, chunk in enumerate(pieces):
                events.append((d * c / (len(pieces) + 1), j, c, chunk))
            events.append((d, j, len(pieces), None))
        events.sort()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        done: set[int] = set()
        self.started.extend(samples)
        self.in_flight += len(samples)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for t, j, c, piece in events:
                await asyncio.sleep(max(0.0, t0 + t - loop.time()))
                s = samples[j]
                if s in self.fail_at and c >= self.fail_at[s]:
                    if self.fail_gate is not None:
                        await self.fail_gate.wait()
                    raise BackendError(f"sample {s} broke", partial_output_tokens=self.partial)
                if piece is None:
                    done.add(j)
                    self.finished.append(s)
                    self.progress.set()
                    yield SampleResult(
                        self.texts[s], self.input_tokens, self.output_tokens(s), index=j
                    )
                else:
                    self.streamed[s] = self.streamed.get(s, 0) + len(piece)
                    yield TextDelta(piece, index=j)
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled.extend(s for j, s in enumerate(samples) if j not in done)
            raise
        finally:
            self.in_flight -= len(samples)

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def template(prompt: str = "What is 6*7?", timeout_s: float | None = None) -> SampleRequest:
    return SampleRequest(prompt=prompt, max_tokens=64, temperature=0.7, timeout_s=timeout_s)


async def collect(run: SampleRun) -> list[SampleResult]:
    return [r async for r in run]


# ---- sending ----------------------------------------------------------------------------
async def test_one_request_per_sample_with_seeds_in_finish_order() -> None:
    backend = FakeSampler(["a 1", "b 2", "c 3", "d 4"], delays=[0.4, 0.3, 0.2, 0.1])
    async with SampleRun(backend, template(), 4) as run:
        results = await collect(run)
    assert [r.index for r in results] == [3, 2, 1, 0]
    assert [r.text for r in results] == ["d 4", "c 3", "b 2", "a 1"]
    assert sorted(r.seed for r in backend.requests) == [0, 1, 2, 3]
    assert all(r.n == 1 and r.temperature == 0.7 for r in backend.requests)
    assert not run.batched and run.finished == 4 and run.cancelled == 0
    assert backend.cancelled == []


async def test_n_per_request_sends_one_request_tagged_by_index() -> None:
    backend = FakeSampler(["a 1", "b 2", "c 3"], delays=[0.3, 0.1, 0.2], max_n=8)
    async with SampleRun(backend, template(), 3) as run:
        results = await collect(run)
    [request] = backend.requests
    assert request.n == 3 and request.seed == 0
    assert run.batched
    assert [(r.index, r.text) for r in results] == [(1, "b 2"), (2, "c 3"), (0, "a 1")]
    usage = run.usage()
    assert (usage.input_tokens, usage.samples, usage.estimated) == (30, 3, False)


async def test_a_backend_with_too_small_max_n_gets_single_requests() -> None:
    backend = FakeSampler(["x"] * 4, max_n=3)
    async with SampleRun(backend, template(), 4) as run:
        await collect(run)
    assert [r.n for r in backend.requests] == [1, 1, 1, 1]


async def test_parallel_caps_samples_in_flight_and_wins_over_n_per_request() -> None:
    backend = FakeSampler([f"s{i}" for i in range(6)], delays=[0.01] * 6, max_n=8)
    async with SampleRun(backend, template(), 6, parallel=2) as run:
        results = await collect(run)
    assert backend.max_in_flight == 2
    assert all(r.n == 1 for r in backend.requests)
    assert sorted(r.index for r in results) == list(range(6))
    assert run.started == 6


async def test_results_ready_together_come_in_index_order() -> None:
    # All four finish before the consumer looks: the reverse finish order is not kept.
    backend = FakeSampler(["a", "b", "c", "d"], delays=[0.04, 0.03, 0.02, 0.01])
    async with SampleRun(backend, template(), 4) as run:
        while len(backend.finished) < 4:
            await backend.progress.wait()
            backend.progress.clear()
        results = await collect(run)
    assert backend.finished == [3, 2, 1, 0]
    assert [r.index for r in results] == [0, 1, 2, 3]


async def test_results_are_the_same_on_both_paths() -> None:
    texts = ["7", "42", "42", "9", "42"]
    delays = [0.05, 0.01, 0.03, 0.02, 0.04]
    single = FakeSampler(texts, delays=delays)
    batched = FakeSampler(texts, delays=delays, max_n=16)
    async with SampleRun(single, template(), 5) as a:
        got_a = await collect(a)
    async with SampleRun(batched, template(), 5) as b:
        got_b = await collect(b)
    assert sorted((r.index, r.text) for r in got_a) == sorted((r.index, r.text) for r in got_b)
    assert a.usage() == b.usage()


# ---- cancellation and usage -------------------------------------------------------------
async def test_cancel_stops_running_samples_on_the_backend_and_charges_what_they_sent() -> None:
    text = "the answer is 42, after a long and winding derivation"
    backend = FakeSampler([text] * 4, delays=[0.01, 0.02, SLOW, SLOW], chunks=8)
    async with SampleRun(backend, template(), 4) as run:
        got = []
        async for result in run:
            got.append(result.index)
            if len(got) == 2:
                await run.cancel()
        assert [r async for r in run] == []  # iteration is over
    assert got == [0, 1]
    assert sorted(backend.cancelled) == [2, 3]
    assert (run.finished, run.cancelled, run.started) == (2, 2, 4)
    usage = run.usage()
    streamed = [backend.streamed.get(s, 0) for s in (2, 3)]
    assert all(0 < chars < len(text) for chars in streamed)  # the first delta came at once
    assert usage.input_tokens == 4 * 10  # cancelled samples: the siblings' input count
    assert usage.output_tokens == 2 * backend.output_tokens(0) + sum(
        estimate_tokens(c) for c in streamed
    )
    assert usage.output_tokens < 4 * backend.output_tokens(0)
    assert usage.estimated and usage.samples == 4


async def test_leaving_the_block_cancels_what_is_left() -> None:
    backend = FakeSampler(["1", "2", "3"], delays=[0.01, SLOW, SLOW], max_n=4)
    async with SampleRun(backend, template(), 3) as run:
        async for _ in run:
            break
    assert sorted(backend.cancelled) == [1, 2]
    assert run.cancelled == 2 and run.finished == 1


async def test_cancelled_before_any_result_estimates_input_from_the_prompt() -> None:
    backend = FakeSampler(["x" * 40] * 2, delays=[SLOW, SLOW], chunks=4)
    prompt = "p" * 100
    async with SampleRun(backend, template(prompt), 2) as run:
        await asyncio.sleep(0.01)
    assert sorted(backend.cancelled) == [0, 1]
    usage = run.usage()
    assert usage.input_tokens == 2 * 25  # 100 characters, 4 a token
    assert usage.output_tokens == 2 * estimate_tokens(10)  # the first of 4 deltas each
    assert usage.estimated


async def test_parallel_samples_not_yet_started_are_never_sent() -> None:
    backend = FakeSampler(["a"] * 5, delays=[0.01, SLOW, SLOW, SLOW, SLOW])
    async with SampleRun(backend, template(), 5, parallel=2) as run:
        async for _ in run:
            await run.cancel()
    # The consumer stopped on sample 0's result before sample 2 could take its slot.
    assert backend.started == [0, 1]
    assert backend.cancelled == [1]
    assert run.started == 2 and run.usage().samples == 2


async def test_later_samples_get_the_time_that_is_left() -> None:
    backend = FakeSampler(["a", "b"], delays=[0.05, 0.0])
    async with SampleRun(backend, template(timeout_s=10.0), 2, parallel=1) as run:
        await collect(run)
    first, second = backend.requests
    assert first.timeout_s is not None and second.timeout_s is not None
    assert second.timeout_s < first.timeout_s <= 10.0


async def test_a_sample_with_no_time_left_fails_with_backend_timeout() -> None:
    backend = FakeSampler(["a", "b"], delays=[0.05, 0.0])
    async with SampleRun(backend, template(timeout_s=0.02), 2, parallel=1) as run:
        with pytest.raises(BackendTimeout, match="no time left"):
            await collect(run)
    assert len(backend.requests) == 1


# ---- failures ---------------------------------------------------------------------------
async def test_a_failed_sample_raises_after_cancelling_the_rest_and_keeps_its_tokens() -> None:
    gate = asyncio.Event()  # sample 1 fails once sample 0 has been seen
    backend = FakeSampler(
        ["one two three four"] * 3,
        delays=[0.01, 0.04, SLOW],
        fail_at={1: 2},
        partial=7,
        fail_gate=gate,
    )
    async with SampleRun(backend, template(), 3) as run:
        seen = []
        with pytest.raises(BackendError, match="sample 1 broke"):
            async for result in run:
                seen.append(result.index)
                gate.set()
    assert seen == [0]
    assert backend.cancelled == [2]
    assert (run.finished, run.failed, run.cancelled) == (1, 1, 1)
    usage = run.usage()
    # finished: 10 in + 5 out; failed: 10 in + max(7 reported, streamed); cancelled: 10 in + 1
    assert usage.input_tokens == 30
    assert usage.output_tokens == 5 + 7 + estimate_tokens(backend.streamed[2])
    assert usage.estimated


async def test_a_sample_that_failed_before_any_output_is_not_charged() -> None:
    backend = FakeSampler(["aaaa", "bbbb"], fail_at={1: 0})
    async with SampleRun(backend, template(), 2, parallel=1) as run:
        with pytest.raises(BackendError):
            await collect(run)
    usage = run.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (10, 1, False)


async def test_an_n_request_missing_a_result_is_a_backend_error() -> None:
    class Short(FakeSampler):
        async def stream(
            self, request: SampleRequest
        ) -> AsyncGenerator[TextDelta | SampleResult, None]:
            yield TextDelta("x", index=1)
            yield SampleResult("x", 3, 1, index=0)

    async with SampleRun(Short(["x", "x"], max_n=2), template(), 2) as run:
        with pytest.raises(BackendError, match="without a final result"):
            await collect(run)
    assert run.failed == 1 and run.finished == 1


async def test_bad_arguments() -> None:
    backend = FakeSampler(["a"])
    with pytest.raises(ValueError, match="k >= 1"):
        SampleRun(backend, template(), 0)
    with pytest.raises(ValueError, match="parallel"):
        SampleRun(backend, template(), 1, parallel=0)
    with pytest.raises(RuntimeError, match="async with"):
        await anext(SampleRun(backend, template(), 1))

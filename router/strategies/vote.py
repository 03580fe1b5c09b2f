"""``vote@k``: k samples in parallel, majority over their extracted final answers."""

from __future__ import annotations

import asyncio
from collections import Counter

from router.core.types import SampleRequest, SampleResult, StrategyResult
from router.errors import InvalidRequest
from router.strategies.base import (
    Options,
    RunContext,
    Strategy,
    check_options,
    collect_sample,
    register,
)
from router.strategies.extract import extract_answer

SAMPLING_TEMPERATURE = 0.7


def majority(answers: list[str]) -> int:
    """Index of the sample whose answer won; ties go to the answer seen first."""
    counts = Counter(answers)
    best = max(counts.values())
    for i, a in enumerate(answers):
        if counts[a] == best:
            return i
    raise ValueError("no answers to vote on")


class Vote(Strategy):
    kind = "vote"

    def __init__(self, k: int) -> None:
        self.k = k

    @property
    def name(self) -> str:
        return f"vote@{self.k}"

    @property
    def samples(self) -> int:
        return self.k

    async def run(self, ctx: RunContext) -> StrategyResult:
        backend, emit = ctx.backend, ctx.emit
        requests = [
            SampleRequest(
                prompt=ctx.prompt,
                max_tokens=ctx.max_tokens,
                temperature=SAMPLING_TEMPERATURE,
                seed=i,
                timeout_s=ctx.timeout_s,
            )
            for i in range(self.k)
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(collect_sample(backend, r)) for r in requests]
        except ExceptionGroup as group:
            # One failed sample fails the vote; report the first cause, not the group.
            raise group.exceptions[0] from None
        results: list[SampleResult] = [t.result() for t in tasks]
        winner = results[majority([extract_answer(r.text) for r in results])]
        await emit(winner.text)
        return StrategyResult(
            winner.text,
            sum(r.input_tokens for r in results),
            sum(r.output_tokens for r in results),
            self.k,
        )


def _make(k: int | None, options: Options) -> Strategy:
    if k is None or not 2 <= k <= 64:
        raise InvalidRequest("strategy 'vote' needs a sample count 2..64, e.g. 'vote@5'")
    check_options("vote", options, {})
    return Vote(k)


register("vote", _make)

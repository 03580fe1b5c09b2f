"""``think@N``: a reasoning-token budget of N, enforced by budget forcing.

Two greedy calls on the arm's tier:

1. the prompt with the answer started as ``think_open`` (continuation), at most N tokens,
   stopped at ``think_close``: the thinking. If it runs to N tokens it is cut there.
2. the prompt with the answer continued as ``think_open + thinking + think_close +
   answer_prefix``, at most ``answer_tokens`` tokens (and at most the request's
   ``max_tokens``): the answer, streamed to the caller as it is produced.

Options: ``answer_tokens`` (64), ``think_open`` (``"<think>\\n"``), ``think_close``
(``"\\n</think>\\n"``), ``answer_prefix`` (``"Final answer:"``). Both calls are charged; the
second call's input includes the thinking.
"""

from __future__ import annotations

import time

from router.core.types import SampleRequest, StrategyResult
from router.errors import BackendError, InvalidRequest
from router.strategies.base import (
    Options,
    PriceOf,
    RunContext,
    Strategy,
    check_options,
    collect_sample,
    register,
)

MAX_BUDGET = 1 << 20
JOIN_SLACK_TOKENS = 2
"""Tokens each join of two texts may add when the backend tokenizes them together."""


def tokens_upper_bound(text: str) -> int:
    """At most one token per UTF-8 byte: a bound that holds for byte-level tokenizers."""
    return len(text.encode("utf-8"))


class Think(Strategy):
    kind = "think"

    def __init__(
        self,
        budget: int,
        *,
        answer_tokens: int = 64,
        think_open: str = "<think>\n",
        think_close: str = "\n</think>\n",
        answer_prefix: str = "Final answer:",
    ) -> None:
        self.budget = budget
        self.answer_tokens = answer_tokens
        self.think_open = think_open
        self.think_close = think_close
        self.answer_prefix = answer_prefix

    @property
    def name(self) -> str:
        return f"think@{self.budget}"

    @property
    def samples(self) -> int:
        return 2

    def reservation_micros(
        self, tier: str, price_of: PriceOf, input_tokens_upper: int, max_tokens: int
    ) -> int:
        """Call 1 reads the prompt and ``think_open`` and writes at most N tokens; call 2
        reads those plus the thinking and the fixed texts, and writes the answer."""
        price = price_of(tier)
        opened = tokens_upper_bound(self.think_open) + JOIN_SLACK_TOKENS
        thinking = price.micros(input_tokens_upper + opened, self.budget)
        fixed = (
            tokens_upper_bound(self.think_open + self.think_close + self.answer_prefix)
            + 3 * JOIN_SLACK_TOKENS
        )
        answering = price.micros(
            input_tokens_upper + self.budget + fixed, min(self.answer_tokens, max_tokens)
        )
        return thinking + answering

    async def run(self, ctx: RunContext) -> StrategyResult:
        started = time.monotonic()

        def left() -> float | None:
            if ctx.timeout_s is None:
                return None
            return max(0.001, ctx.timeout_s - (time.monotonic() - started))

        close_mark = self.think_close.strip()
        thought = await collect_sample(
            ctx.backend,
            SampleRequest(
                prompt=ctx.prompt,
                max_tokens=self.budget,
                temperature=0.0,
                timeout_s=left(),
                stop=(close_mark,),
                continuation=self.think_open,
            ),
        )
        thinking = thought.text
        if close_mark in thinking:  # a backend that does not apply stop strings
            thinking = thinking[: thinking.index(close_mark)]
        budget_hit = thought.finish_reason == "length" or thought.output_tokens >= self.budget

        started_answer = False

        async def emit(delta: str) -> None:
            nonlocal started_answer
            if not started_answer:
                delta = delta.lstrip()
                started_answer = bool(delta)
            if delta:
                await ctx.emit(delta)

        try:
            answered = await collect_sample(
                ctx.backend,
                SampleRequest(
                    prompt=ctx.prompt,
                    max_tokens=min(self.answer_tokens, ctx.max_tokens),
                    temperature=0.0,
                    timeout_s=left(),
                    continuation=(
                        self.think_open + thinking + self.think_close + self.answer_prefix
                    ),
                ),
                emit,
            )
        except BackendError as exc:
            exc.partial_output_tokens += thought.output_tokens
            raise
        return StrategyResult(
            answered.text.lstrip(),
            thought.input_tokens + answered.input_tokens,
            thought.output_tokens + answered.output_tokens,
            2,
            detail={
                "thinking_tokens": thought.output_tokens,
                "budget": self.budget,
                "budget_hit": budget_hit,
            },
            usage_estimated=thought.usage_estimated or answered.usage_estimated,
        )


def _make(k: int | None, options: Options) -> Strategy:
    if k is None or not 1 <= k <= MAX_BUDGET:
        raise InvalidRequest(
            f"strategy 'think' needs a thinking budget 1..{MAX_BUDGET} tokens, e.g. 'think@1024'"
        )
    check_options(
        "think",
        options,
        {"answer_tokens": int, "think_open": str, "think_close": str, "answer_prefix": str},
    )
    answer_tokens = options.get("answer_tokens", 64)
    if answer_tokens < 1:
        raise InvalidRequest("strategy 'think': option 'answer_tokens' must be at least 1")
    close = options.get("think_close", "\n</think>\n")
    if not close.strip():
        raise InvalidRequest("strategy 'think': option 'think_close' must contain a marker")
    return Think(
        k,
        answer_tokens=int(answer_tokens),
        think_open=options.get("think_open", "<think>\n"),
        think_close=close,
        answer_prefix=options.get("answer_prefix", "Final answer:"),
    )


register("think", _make)

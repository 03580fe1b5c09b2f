"""``best@k``: k samples, a scorer picks the one to answer with (best-of-N).

Options (``strategy_options`` of the arm):

* ``scorer``: ``"logprob"`` (default; the sample with the highest mean token log-probability,
  so samples are requested with logprobs) or a reward model on Triton,
  ``{triton: "host:port", model: NAME, timeout_s: S}``;
* ``parallel``: most samples in flight at once (default: all k).

Samples are drawn at temperature 0.7 with seeds 0..k-1. The highest score wins, ties going to
the lowest sample index, and its text is emitted once at the end. When the scorer fails or
can score no sample (a backend that returns no logprobs), the answer falls back to a majority
vote over the samples' final answers and ``detail["fallback"]`` says so.
"""

from __future__ import annotations

import logging
import math
import time

from router.core.types import SampleRequest, SampleResult, StrategyResult
from router.errors import BackendError, InvalidRequest
from router.strategies.base import Options, RunContext, Strategy, check_options, register
from router.strategies.extract import extract_answer
from router.strategies.sampling import SampleRun
from router.strategies.scorers import (
    LOGPROB,
    AnyScorer,
    best_index,
    build_scorer,
    score_samples,
    wants_logprobs,
)
from router.strategies.vote import SAMPLING_TEMPERATURE, majority

log = logging.getLogger(__name__)

MAX_K = 64


class Best(Strategy):
    kind = "best"

    def __init__(self, k: int, scorer: AnyScorer, *, parallel: int | None = None) -> None:
        self.k = k
        self.scorer = scorer
        self.parallel = parallel

    @property
    def name(self) -> str:
        return f"best@{self.k}"

    @property
    def samples(self) -> int:
        return self.k

    async def run(self, ctx: RunContext) -> StrategyResult:
        started = time.monotonic()
        template = SampleRequest(
            prompt=ctx.prompt,
            max_tokens=ctx.max_tokens,
            temperature=SAMPLING_TEMPERATURE,
            seed=0,
            timeout_s=ctx.timeout_s,
            logprobs=wants_logprobs(self.scorer),
        )
        async with SampleRun(ctx.backend, template, self.k, parallel=self.parallel) as run:
            try:
                results = [r async for r in run]
            except BackendError as exc:
                exc.partial_output_tokens = max(
                    exc.partial_output_tokens, run.usage().output_tokens
                )
                raise
            usage = run.usage()
        if not results:
            raise BackendError(f"tier {ctx.tier!r} returned no samples for {self.name}")
        results.sort(key=lambda r: r.index)
        detail: dict[str, str | int | float | bool] = {"scorer": self.scorer.name}
        winner = await self._pick(ctx, results, started, detail)
        answer = results[winner].text
        await ctx.emit(answer)
        return StrategyResult(
            answer,
            usage.input_tokens,
            usage.output_tokens,
            usage.samples,
            detail=detail,
            usage_estimated=usage.estimated,
        )

    async def _pick(
        self,
        ctx: RunContext,
        results: list[SampleResult],
        started: float,
        detail: dict[str, str | int | float | bool],
    ) -> int:
        left = None if ctx.timeout_s is None else ctx.timeout_s - (time.monotonic() - started)
        try:
            scores = await score_samples(
                self.scorer,
                ctx.prompt,
                results,
                timeout_s=None if left is None else max(0.001, left),
            )
        except BackendError as exc:
            log.warning(
                "%s: scorer %s failed, answering by vote: %s", self.name, self.scorer.name, exc
            )
            scores = []
        winner = best_index(scores) if scores else 0
        if not scores or not math.isfinite(scores[winner]):
            detail["fallback"] = "vote"
            return majority([extract_answer(r.text) for r in results])
        detail["best_score"] = scores[winner]
        return winner

    async def aclose(self) -> None:
        await self.scorer.aclose()


def parallel_option(kind: str, options: Options) -> int | None:
    """The ``parallel`` option: a positive sample count, or None for all at once."""
    value = options.get("parallel")
    if value is None:
        return None
    if value < 1:
        raise InvalidRequest(f"strategy {kind!r}: option 'parallel' must be at least 1")
    return int(value)


def _make(k: int | None, options: Options) -> Strategy:
    if k is None or not 2 <= k <= MAX_K:
        raise InvalidRequest(f"strategy 'best' needs a sample count 2..{MAX_K}, e.g. 'best@4'")
    check_options("best", options, {"scorer": (str, dict), "parallel": int})
    parallel = parallel_option("best", options)
    try:
        scorer = build_scorer(options.get("scorer", LOGPROB))
    except InvalidRequest as exc:
        raise InvalidRequest(f"strategy 'best': {exc.message}") from None
    return Best(k, scorer, parallel=parallel)


register("best", _make)

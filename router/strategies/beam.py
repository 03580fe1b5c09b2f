"""``beam@w``: step-level beam search guided by a process reward.

The answer grows one step at a time (a step ends at ``delimiter``). Each round, every live
beam is continued ``expand`` times (the first round samples ``w × expand`` continuations of
the empty answer) at temperature 0.7 with distinct seeds, each continuation sent as
``SampleRequest.continuation`` = the beam's trace so far and stopped at the delimiter. The
scorer rates every extended partial trace, and the best ``w`` traces (finished ones
included) are kept. The search stops when every kept beam is finished or after
``max_steps`` rounds; the answer is the best finished trace seen, else the best kept one,
emitted once at the end.

Options: ``scorer`` (required: a process-reward model ``{triton: "host:port", model: NAME}``
or ``"logprob"``, the running mean token log-probability of the trace), ``delimiter``
(default ``"\\n"``), ``max_steps`` (8), ``expand`` (children per beam, default w),
``step_tokens`` (most tokens per step, 128).

When a beam is finished: the trace reached the request's ``max_tokens`` (summed over its
steps), or the backend ended a step for a reason other than ``stop``/``length``, or two
steps in a row added no text. A step that ends with ``stop`` is taken to have ended at the
delimiter, which is appended to the trace, because a sample's result does not say whether a
stop string or the end of the answer stopped it; an answer that has ended yields empty steps
from then on, while a blank line in the middle of an answer yields only one. A step cut by
``length`` below ``max_tokens`` continues in the next round without a delimiter.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, replace

from router.core.types import Price, SampleRequest, SampleResult, StrategyResult, TierUsage
from router.errors import BackendError, InvalidRequest
from router.strategies.base import (
    Options,
    PriceOf,
    RunContext,
    Strategy,
    check_options,
    register,
)
from router.strategies.sampling import SampleRun
from router.strategies.scorers import AnyScorer, MeanLogprobScorer, build_scorer

SAMPLING_TEMPERATURE = 0.7
MAX_WIDTH = 16
MAX_CALLS_PER_ROUND = 64
MAX_STEPS = 64
JOIN_SLACK_TOKENS = 2
"""Tokens a join of two texts may add when the backend tokenizes them together."""


def tokens_upper_bound(text: str) -> int:
    """At most one token per UTF-8 byte: a bound that holds for byte-level tokenizers."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class _Beam:
    trace: str
    tokens: int = 0
    score: float = 0.0
    finished: bool = False
    empty_steps: int = 0
    pending_delimiters: int = 0
    logprob_sum: float = 0.0
    logprob_tokens: int = 0
    logprob_missing: bool = False

    def answer(self, delimiter: str) -> str:
        """The trace without the delimiters appended after its last text."""
        cut = len(delimiter) * self.pending_delimiters
        return self.trace[: len(self.trace) - cut] if cut else self.trace

    @property
    def mean_logprob(self) -> float:
        if self.logprob_missing:
            return -math.inf
        return self.logprob_sum / self.logprob_tokens if self.logprob_tokens else 0.0


@dataclass
class _Spent:
    input_tokens: int = 0
    output_tokens: int = 0
    samples: int = 0
    estimated: bool = False

    def add(self, usage: TierUsage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.samples += usage.samples
        self.estimated = self.estimated or usage.estimated


class Beam(Strategy):
    kind = "beam"

    def __init__(
        self,
        width: int,
        scorer: AnyScorer,
        *,
        delimiter: str = "\n",
        max_steps: int = 8,
        expand: int | None = None,
        step_tokens: int = 128,
    ) -> None:
        self.width = width
        self.scorer = scorer
        self.delimiter = delimiter
        self.max_steps = max_steps
        self.expand = expand if expand is not None else width
        self.step_tokens = step_tokens

    @property
    def name(self) -> str:
        return f"beam@{self.width}"

    @property
    def samples(self) -> int:
        return self.width * self.expand * self.max_steps

    def reservation_micros(
        self, tier: str, price_of: PriceOf, input_tokens_upper: int, max_tokens: int
    ) -> int:
        """``w × expand`` calls per round for ``max_steps`` rounds; each call reads the prompt
        plus a trace of at most ``max_tokens`` tokens and the delimiters appended to it, and
        writes at most one step."""
        per_step = tokens_upper_bound(self.delimiter) + JOIN_SLACK_TOKENS
        trace_upper = max_tokens + self.max_steps * per_step
        price: Price = price_of(tier)
        call = price.micros(input_tokens_upper + trace_upper, min(self.step_tokens, max_tokens))
        return self.samples * call

    async def run(self, ctx: RunContext) -> StrategyResult:
        started = time.monotonic()

        def left() -> float | None:
            if ctx.timeout_s is None:
                return None
            return max(0.001, ctx.timeout_s - (time.monotonic() - started))

        spent = _Spent()
        kept = [_Beam("")]
        finished: list[_Beam] = []
        seed = 0
        rounds = 0
        for step in range(self.max_steps):
            live = [b for b in kept if not b.finished]
            if not live:
                break
            rounds += 1
            per_beam = self.width * self.expand if step == 0 else self.expand
            template = SampleRequest(
                prompt=ctx.prompt,
                max_tokens=1,
                temperature=SAMPLING_TEMPERATURE,
                timeout_s=left(),
                stop=(self.delimiter,),
                logprobs=isinstance(self.scorer, MeanLogprobScorer),
            )
            runs = []
            for beam in live:
                request = replace(
                    template,
                    seed=seed,
                    continuation=beam.trace,
                    max_tokens=min(self.step_tokens, ctx.max_tokens - beam.tokens),
                )
                runs.append((beam, SampleRun(ctx.backend, request, per_beam)))
                seed += per_beam
            children = await self._sample(runs, spent, ctx.max_tokens)
            scores = await self._score(ctx, children, left(), spent)
            children = [replace(c, score=s) for c, s in zip(children, scores, strict=True)]
            finished.extend(c for c in children if c.finished)
            kept = _best_unique([b for b in kept if b.finished] + children, self.width)
            if all(b.finished for b in kept):
                break
        pool = finished or kept
        best = pool[_top(pool)]
        answer = best.answer(self.delimiter)
        await ctx.emit(answer)
        detail: dict[str, str | int | float | bool] = {
            "scorer": self.scorer.name,
            "steps": rounds,
            "finished": best.finished,
        }
        if math.isfinite(best.score):
            detail["best_score"] = best.score
        return StrategyResult(
            answer,
            spent.input_tokens,
            spent.output_tokens,
            spent.samples,
            detail=detail,
            usage_estimated=spent.estimated,
        )

    async def _sample(
        self, runs: list[tuple[_Beam, SampleRun]], spent: _Spent, max_tokens: int
    ) -> list[_Beam]:
        """Run every beam's continuations together; the children in beam, then seed order."""

        async def collect(run: SampleRun) -> list[SampleResult]:
            async with run:
                return sorted([r async for r in run], key=lambda r: r.index)

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(collect(run)) for _, run in runs]
        except ExceptionGroup as group:
            for _, run in runs:
                spent.add(run.usage())
            exc = group.exceptions[0]
            if isinstance(exc, BackendError):
                exc.partial_output_tokens = max(exc.partial_output_tokens, spent.output_tokens)
            raise exc from None
        for _, run in runs:
            spent.add(run.usage())
        return [
            self._extend(beam, result, max_tokens)
            for (beam, _), task in zip(runs, tasks, strict=True)
            for result in task.result()
        ]

    def _extend(self, beam: _Beam, result: SampleResult, max_tokens: int) -> _Beam:
        """The beam after one more step (see the module docstring for when it is finished)."""
        tokens = beam.tokens + result.output_tokens
        out_of_tokens = tokens >= max_tokens
        text, reason = result.text, result.finish_reason
        empty_steps = 0
        if reason == "stop" and text:
            trace, pending, finished = beam.trace + text + self.delimiter, 1, out_of_tokens
        elif reason == "stop":
            empty_steps = beam.empty_steps + 1
            finished = empty_steps >= 2 or out_of_tokens
            trace = beam.trace if finished else beam.trace + self.delimiter
            pending = beam.pending_delimiters + (0 if finished else 1)
        else:
            trace = beam.trace + text
            pending = 0 if text else beam.pending_delimiters
            finished = out_of_tokens or reason != "length"
        logprob_sum, logprob_tokens = beam.logprob_sum, beam.logprob_tokens
        missing = beam.logprob_missing
        if isinstance(self.scorer, MeanLogprobScorer) and result.output_tokens:
            if result.mean_logprob is None or not math.isfinite(result.mean_logprob):
                missing = True
            else:
                logprob_sum += result.mean_logprob * result.output_tokens
                logprob_tokens += result.output_tokens
        return _Beam(
            trace,
            tokens=tokens,
            finished=finished,
            empty_steps=empty_steps,
            pending_delimiters=pending,
            logprob_sum=logprob_sum,
            logprob_tokens=logprob_tokens,
            logprob_missing=missing,
        )

    async def _score(
        self, ctx: RunContext, children: list[_Beam], timeout_s: float | None, spent: _Spent
    ) -> list[float]:
        if isinstance(self.scorer, MeanLogprobScorer):
            return [c.mean_logprob for c in children]
        traces = [c.answer(self.delimiter) for c in children]
        try:
            scores = await self.scorer.score(ctx.prompt, traces, timeout_s=timeout_s)
        except BackendError as exc:
            exc.partial_output_tokens = max(exc.partial_output_tokens, spent.output_tokens)
            raise
        if len(scores) != len(children):
            raise BackendError(
                f"scorer {self.scorer.name!r} returned {len(scores)} scores for "
                f"{len(children)} traces",
                partial_output_tokens=spent.output_tokens,
            )
        return [float(s) for s in scores]

    async def aclose(self) -> None:
        await self.scorer.aclose()


def _top(beams: list[_Beam]) -> int:
    best = 0
    for i, b in enumerate(beams):
        if b.score > beams[best].score:
            best = i
    return best


def _best_unique(beams: list[_Beam], width: int) -> list[_Beam]:
    """The ``width`` best beams with distinct traces; ties keep the earlier beam."""
    seen: set[str] = set()
    unique: list[_Beam] = []
    for b in sorted(beams, key=lambda b: -b.score):
        if b.trace not in seen:
            seen.add(b.trace)
            unique.append(b)
    return unique[:width]


def _int_option(options: Options, key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    if not low <= value <= high:
        raise InvalidRequest(f"strategy 'beam': option {key!r} must be in {low}..{high}")
    return int(value)


def _make(k: int | None, options: Options) -> Strategy:
    if k is None or not 1 <= k <= MAX_WIDTH:
        raise InvalidRequest(f"strategy 'beam' needs a beam width 1..{MAX_WIDTH}, e.g. 'beam@4'")
    check_options(
        "beam",
        options,
        {
            "scorer": (str, dict),
            "delimiter": str,
            "max_steps": int,
            "expand": int,
            "step_tokens": int,
        },
    )
    if "scorer" not in options:
        raise InvalidRequest(
            "strategy 'beam' needs option 'scorer': a process-reward model "
            "{triton: 'host:port', model: NAME} or 'logprob'"
        )
    delimiter = options.get("delimiter", "\n")
    if not delimiter:
        raise InvalidRequest("strategy 'beam': option 'delimiter' must not be empty")
    expand = _int_option(options, "expand", k, 1, MAX_CALLS_PER_ROUND)
    if k * expand > MAX_CALLS_PER_ROUND:
        raise InvalidRequest(
            f"strategy 'beam': width × option 'expand' must be at most {MAX_CALLS_PER_ROUND}"
        )
    max_steps = _int_option(options, "max_steps", 8, 1, MAX_STEPS)
    step_tokens = _int_option(options, "step_tokens", 128, 1, 1 << 20)
    try:
        scorer = build_scorer(options["scorer"])
    except InvalidRequest as exc:
        raise InvalidRequest(f"strategy 'beam': {exc.message}") from None
    return Beam(
        k,
        scorer,
        delimiter=delimiter,
        max_steps=max_steps,
        expand=expand,
        step_tokens=step_tokens,
    )


register("beam", _make)

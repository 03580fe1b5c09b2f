"""``vote@k``: k samples, majority over their extracted final answers, with early stopping.

Options (``strategy_options`` of the arm):

``extractor``   which answer a sample votes for (see ``router.strategies.extract``); default
                ``auto``. A sample with no extractable answer does not vote.
``early_stop``  ``none``: wait for all k. ``decided`` (default): stop once the leader cannot
                be overtaken by the samples still outstanding (the answer is the one all k
                would give). ``adaptive``: also stop once the leader is probably the true
                majority — with ``L`` votes for the leader and ``O`` for other answers, the
                leader's share p gets a Beta(L+1, O+1) posterior, and the run stops when
                P(p > 1/2) ≥ ``confidence``.
``confidence``  for ``adaptive``, in (0.5, 1); default 0.95 (4 agreeing samples out of 4;
                at 0.9, 3 out of 3).
``min_samples`` finish at least this many samples before stopping early; default 2 with
                ``adaptive``, 1 otherwise.
``parallel``    at most this many samples in flight (default k). With early stopping a
                smaller value spends less: samples not yet started are never sent.

Ties between answers with equal votes go to the answer of the lowest-numbered sample (sample
i runs with seed i), so the winner depends only on which samples finished, not on timing.
Stopping cancels the outstanding samples on the server; they are charged for what they had
produced. The answer, the text of the winning sample, is emitted once at the end.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.core.protocols import Backend
from router.core.types import (
    DetailValue,
    SampleRequest,
    SampleResult,
    StrategyResult,
    TierUsage,
)
from router.errors import BackendError, InvalidRequest
from router.strategies.base import (
    Options,
    RunContext,
    Strategy,
    check_options,
    register,
)
from router.strategies.extract import Extractor, get_extractor
from router.strategies.sampling import SampleRun

SAMPLING_TEMPERATURE = 0.7
MAX_K = 64
EARLY_STOP_MODES = ("none", "decided", "adaptive")

VOTE_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "extractor": str,
    "early_stop": str,
    "confidence": (int, float),
    "min_samples": int,
    "parallel": int,
}


@dataclass
class Tally:
    """Votes so far. ``key`` orders samples for ties (lower wins): the sample index for
    ``vote``, the finishing position for ``short``."""

    counts: dict[str, int] = field(default_factory=dict)
    best: dict[str, tuple[int, SampleResult]] = field(default_factory=dict)
    first: tuple[int, SampleResult] | None = None
    finished: int = 0
    answered: int = 0

    def add(self, answer: str | None, key: int, result: SampleResult) -> None:
        self.finished += 1
        if self.first is None or key < self.first[0]:
            self.first = (key, result)
        if answer is None:
            return
        self.answered += 1
        self.counts[answer] = self.counts.get(answer, 0) + 1
        held = self.best.get(answer)
        if held is None or key < held[0]:
            self.best[answer] = (key, result)

    def ranking(self) -> list[str]:
        """Answers, most votes first, ties by the lowest key."""
        return sorted(self.counts, key=lambda a: (-self.counts[a], self.best[a][0]))

    @property
    def leader(self) -> str | None:
        ranked = self.ranking()
        return ranked[0] if ranked else None

    @property
    def leader_votes(self) -> int:
        ranked = self.ranking()
        return self.counts[ranked[0]] if ranked else 0

    @property
    def runner_up_votes(self) -> int:
        ranked = self.ranking()
        return self.counts[ranked[1]] if len(ranked) > 1 else 0

    def winner(self) -> SampleResult:
        """The sample carrying the winning answer (or, if none answered, the first sample)."""
        leader = self.leader
        if leader is not None:
            return self.best[leader][1]
        if self.first is None:
            raise BackendError("no sample finished, so there is nothing to vote on")
        return self.first[1]


def majority(answers: Sequence[str | None]) -> int:
    """Index of the sample whose answer won; ties go to the answer seen first. ``None``
    answers do not vote; with no answer at all, sample 0 wins."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        if not answers:
            raise ValueError("no answers to vote on")
        return 0
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


StopRule = Callable[[Tally, int], bool]
"""Given the tally and the samples still outstanding, whether to stop now."""


def is_decided(tally: Tally, outstanding: int) -> bool:
    """The leader stays ahead however the outstanding samples answer."""
    return tally.leader_votes > tally.runner_up_votes + outstanding


def p_majority(leader: int, others: int) -> float:
    """P(p > 1/2) for p ~ Beta(leader + 1, others + 1): the chance the leading answer holds
    a majority of the samples the model would give, after a uniform prior."""
    n = leader + others + 1
    below = sum(math.comb(n, j) for j in range(leader + 1))
    return below / float(2**n)


@dataclass(frozen=True)
class VoteSettings:
    """Validated vote options, shared by ``vote``, ``escalate``."""

    extractor: str = "auto"
    early_stop: str = "decided"
    confidence: float = 0.95
    min_samples: int = 1
    parallel: int | None = None

    @property
    def extract(self) -> Extractor:
        return get_extractor(self.extractor)

    def stop_rule(self) -> StopRule | None:
        """The early-stop rule of these settings (None: run all k)."""
        if self.early_stop == "none":
            return None
        adaptive = self.early_stop == "adaptive"
        min_samples, confidence = self.min_samples, self.confidence

        def stop(tally: Tally, outstanding: int) -> bool:
            if tally.finished < min_samples:
                return False
            if is_decided(tally, outstanding):
                return True
            return adaptive and (
                p_majority(tally.leader_votes, tally.answered - tally.leader_votes) >= confidence
            )

        return stop

    @classmethod
    def from_options(cls, kind: str, k: int, options: Options) -> VoteSettings:
        """Check the vote options in ``options`` (others are the caller's to check)."""
        extractor = str(options.get("extractor", "auto"))
        try:
            get_extractor(extractor)
        except InvalidRequest as exc:
            raise InvalidRequest(f"strategy {kind!r}: option 'extractor': {exc.message}") from None
        early_stop = str(options.get("early_stop", "decided"))
        if early_stop not in EARLY_STOP_MODES:
            raise InvalidRequest(
                f"strategy {kind!r}: option 'early_stop' must be one of "
                f"{', '.join(EARLY_STOP_MODES)}, got {early_stop!r}"
            )
        if "confidence" in options and early_stop != "adaptive":
            raise InvalidRequest(
                f"strategy {kind!r}: option 'confidence' applies only with early_stop: adaptive"
            )
        confidence = float(options.get("confidence", 0.95))
        if not 0.5 < confidence < 1.0:
            raise InvalidRequest(
                f"strategy {kind!r}: option 'confidence' must be above 0.5 and below 1, "
                f"got {confidence}"
            )
        min_samples = int(options.get("min_samples", 2 if early_stop == "adaptive" else 1))
        if not 1 <= min_samples <= k:
            raise InvalidRequest(
                f"strategy {kind!r}: option 'min_samples' must be within 1..{k}, got {min_samples}"
            )
        parallel = options.get("parallel")
        if parallel is not None and not 1 <= parallel <= k:
            raise InvalidRequest(
                f"strategy {kind!r}: option 'parallel' must be within 1..{k}, got {parallel}"
            )
        return cls(extractor, early_stop, confidence, min_samples, parallel)


@dataclass(frozen=True)
class VoteOutcome:
    """What one vote found and spent."""

    winner: SampleResult
    votes: int
    answered: int
    finished: int
    stopped_early: bool
    cancelled: int
    usage: TierUsage

    @property
    def agreement(self) -> float:
        """Share of the answering samples that gave the winning answer (0 if none answered)."""
        return self.votes / self.answered if self.answered else 0.0

    def detail(self, extractor: str) -> dict[str, DetailValue]:
        return {
            "votes": self.votes,
            "agreement": round(self.agreement, 6),
            "answered": self.answered,
            "stopped_early": self.stopped_early,
            "extractor": extractor,
            "samples_cancelled": self.cancelled,
        }


async def run_vote(
    backend: Backend,
    template: SampleRequest,
    k: int,
    extract: Extractor,
    *,
    stop: StopRule | None = None,
    parallel: int | None = None,
    by_arrival: bool = False,
) -> VoteOutcome:
    """Sample up to k times and tally the extracted answers until ``stop`` says so.

    Ties go to the lowest sample index, or with ``by_arrival`` to the sample that finished
    first.
    """
    tally = Tally()
    stopped = False
    # With a stop rule, samples go one request each: a multi-choice response (``n`` > 1)
    # reports usage only when every choice has finished, which would leave nothing to save.
    async with SampleRun(backend, template, k, parallel, batch=stop is None) as run:
        try:
            async for result in run:
                index = tally.finished if by_arrival else result.index
                tally.add(extract(result.text), index, result)
                outstanding = k - tally.finished
                if outstanding > 0 and stop is not None and stop(tally, outstanding):
                    stopped = True
                    await run.cancel()
                    break
        except BackendError as exc:
            # One failed sample fails the vote; what every sample produced is still spend.
            exc.partial_output_tokens = max(exc.partial_output_tokens, run.usage().output_tokens)
            raise
    return VoteOutcome(
        winner=tally.winner(),
        votes=tally.leader_votes,
        answered=tally.answered,
        finished=tally.finished,
        stopped_early=stopped,
        cancelled=run.cancelled,
        usage=run.usage(),
    )


def sampling_template(ctx: RunContext) -> SampleRequest:
    """The request every sample of a sampling strategy starts from."""
    return SampleRequest(
        prompt=ctx.prompt,
        max_tokens=ctx.max_tokens,
        temperature=SAMPLING_TEMPERATURE,
        seed=0,
        timeout_s=ctx.timeout_s,
    )


def check_k(kind: str, k: int | None) -> int:
    if k is None or not 2 <= k <= MAX_K:
        raise InvalidRequest(f"strategy {kind!r} needs a sample count 2..{MAX_K}, e.g. '{kind}@5'")
    return k


class Vote(Strategy):
    kind = "vote"

    def __init__(self, k: int, settings: VoteSettings | None = None) -> None:
        self.k = k
        self.settings = settings or VoteSettings()

    @property
    def name(self) -> str:
        return f"vote@{self.k}"

    @property
    def samples(self) -> int:
        return self.k

    async def run(self, ctx: RunContext) -> StrategyResult:
        s = self.settings
        outcome = await run_vote(
            ctx.backend,
            sampling_template(ctx),
            self.k,
            s.extract,
            stop=s.stop_rule(),
            parallel=s.parallel,
        )
        await ctx.emit(outcome.winner.text)
        return StrategyResult(
            outcome.winner.text,
            outcome.usage.input_tokens,
            outcome.usage.output_tokens,
            outcome.usage.samples,
            detail=outcome.detail(s.extractor),
            usage_estimated=outcome.usage.estimated,
        )


def _make(k: int | None, options: Options) -> Strategy:
    k = check_k("vote", k)
    check_options("vote", options, VOTE_OPTIONS)
    return Vote(k, VoteSettings.from_options("vote", k, options))


register("vote", _make)

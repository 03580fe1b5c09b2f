"""``escalate@k``: a vote on the arm's own tier, handed to a stronger arm when it disagrees.

Runs ``vote@k`` on the arm's tier. If the winning answer's agreement (its share of the
answering samples) is below ``threshold``, the request goes to the arm named by ``to``
(``<tier>/<strategy>``, e.g. ``big/greedy``) and that arm's answer is returned; otherwise the
vote's answer is. Only the final answer is emitted (a streaming ``to`` strategy streams it).
Both runs are charged, each at its own tier's price.

Options: ``to`` (required), ``to_options`` (the ``to`` strategy's options), ``threshold``
(0..1, default 0.6), and the vote options ``extractor``, ``early_stop``, ``confidence``,
``min_samples``, ``parallel``.

Early stopping serves the escalation decision: ``decided`` (default) stops the cheap vote as
soon as the outcome is certain — escalation is certain once even all outstanding samples
agreeing with the leader would leave the agreement below ``threshold``; keeping the answer is
certain once the leader cannot be overtaken and keeps at least ``threshold`` of the votes
however the rest answer — so it decides exactly as ``none`` does, for fewer samples.
``adaptive`` stops when escalation is certain or when the vote's adaptive rule holds.
"""

from __future__ import annotations

import time

from router.core.types import Arm, DetailValue, StrategyResult, TierUsage
from router.errors import BackendTimeout, BackendUnavailable, InvalidRequest
from router.strategies.base import (
    Options,
    PriceOf,
    RunContext,
    Strategy,
    check_options,
    parse_strategy,
    register,
)
from router.strategies.vote import (
    VOTE_OPTIONS,
    StopRule,
    Tally,
    VoteSettings,
    check_k,
    is_decided,
    run_vote,
    sampling_template,
)

DEFAULT_THRESHOLD = 0.6


def merge_usage(usages: tuple[TierUsage, ...]) -> tuple[TierUsage, ...]:
    """One entry per tier, in first-use order, summing tokens and samples."""
    merged: dict[str, TierUsage] = {}
    for u in usages:
        held = merged.get(u.tier)
        merged[u.tier] = (
            u
            if held is None
            else TierUsage(
                u.tier,
                held.input_tokens + u.input_tokens,
                held.output_tokens + u.output_tokens,
                held.samples + u.samples,
                held.estimated or u.estimated,
            )
        )
    return tuple(merged.values())


class Escalate(Strategy):
    kind = "escalate"

    def __init__(
        self,
        k: int,
        to_arm: Arm,
        to: Strategy,
        threshold: float = DEFAULT_THRESHOLD,
        settings: VoteSettings | None = None,
    ) -> None:
        self.k = k
        self.to_arm = to_arm
        self.to = to
        self.threshold = threshold
        self.settings = settings or VoteSettings()

    @property
    def name(self) -> str:
        return f"escalate@{self.k}"

    @property
    def samples(self) -> int:
        return self.k

    def tiers_used(self, tier: str) -> tuple[str, ...]:
        used = (tier, *self.to.tiers_used(self.to_arm.tier))
        return tuple(dict.fromkeys(used))

    def reservation_micros(
        self, tier: str, price_of: PriceOf, input_tokens_upper: int, max_tokens: int
    ) -> int:
        own = self.k * price_of(tier).micros(input_tokens_upper, max_tokens)
        return own + self.to.reservation_micros(
            self.to_arm.tier, price_of, input_tokens_upper, max_tokens
        )

    async def aclose(self) -> None:
        await self.to.aclose()

    def stop_rule(self) -> StopRule | None:
        """When the cheap vote may stop: see the module docstring."""
        s = self.settings
        if s.early_stop == "none":
            return None
        vote_rule = s.stop_rule()
        threshold = self.threshold

        def stop(tally: Tally, outstanding: int) -> bool:
            if tally.finished < s.min_samples:
                return False
            lead, answered = tally.leader_votes, tally.answered
            if (lead + outstanding) / (answered + outstanding) < threshold:
                return True
            if s.early_stop == "adaptive":
                return vote_rule is not None and vote_rule(tally, outstanding)
            return is_decided(tally, outstanding) and lead / (answered + outstanding) >= threshold

        return stop

    async def run(self, ctx: RunContext) -> StrategyResult:
        started = time.monotonic()
        s = self.settings
        outcome = await run_vote(
            ctx.backend,
            sampling_template(ctx),
            self.k,
            s.extract,
            stop=self.stop_rule(),
            parallel=s.parallel,
        )
        own = outcome.usage
        escalated = outcome.agreement < self.threshold
        detail: dict[str, DetailValue] = {
            **outcome.detail(s.extractor),
            "escalated": escalated,
            "threshold": self.threshold,
            "to": self.to_arm.name,
        }
        if not escalated:
            await ctx.emit(outcome.winner.text)
            return StrategyResult(
                outcome.winner.text,
                own.input_tokens,
                own.output_tokens,
                own.samples,
                usage=(own,),
                detail=detail,
                usage_estimated=own.estimated,
            )
        to_tier = self.to_arm.tier
        backend = ctx.backends.get(to_tier)
        if backend is None:
            raise BackendUnavailable(
                f"strategy {self.name!r}: tier {to_tier!r} to escalate to is not available"
            )
        left = None if ctx.timeout_s is None else ctx.timeout_s - (time.monotonic() - started)
        if left is not None and left <= 0:
            raise BackendTimeout(
                f"strategy {self.name!r}: no time left to escalate to {self.to_arm.name!r}"
            )
        sub = await self.to.run(
            RunContext(
                backend=backend,
                prompt=ctx.prompt,
                max_tokens=ctx.max_tokens,
                timeout_s=left,
                emit=ctx.emit,
                backends=ctx.backends,
            )
        )
        sub_usage = sub.usage or (
            TierUsage(
                to_tier, sub.input_tokens, sub.output_tokens, sub.samples, sub.usage_estimated
            ),
        )
        usage = merge_usage((own, *sub_usage))
        detail.update({f"to_{key}": value for key, value in sub.detail.items()})
        return StrategyResult(
            sub.answer,
            sum(u.input_tokens for u in usage),
            sum(u.output_tokens for u in usage),
            sum(u.samples for u in usage),
            usage=usage,
            detail=detail,
            usage_estimated=any(u.estimated for u in usage),
        )


def _make(k: int | None, options: Options) -> Strategy:
    k = check_k("escalate", k)
    allowed = {**VOTE_OPTIONS, "to": str, "to_options": dict, "threshold": (int, float)}
    check_options("escalate", options, allowed)
    target = options.get("to")
    if target is None:
        raise InvalidRequest(
            "strategy 'escalate' needs option 'to': the arm to escalate to, e.g. 'big/greedy'"
        )
    try:
        to_arm = Arm.parse(target)
        to = parse_strategy(to_arm.strategy, options.get("to_options") or {})
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"strategy 'escalate': option 'to' ({target!r}): {exc.message}"
        ) from None
    threshold = float(options.get("threshold", DEFAULT_THRESHOLD))
    if not 0.0 <= threshold <= 1.0:
        raise InvalidRequest(
            f"strategy 'escalate': option 'threshold' must be within 0..1, got {threshold}"
        )
    vote_options = {key: value for key, value in options.items() if key in VOTE_OPTIONS}
    settings = VoteSettings.from_options("escalate", k, vote_options)
    return Escalate(k, to_arm, to, threshold, settings)


register("escalate", _make)

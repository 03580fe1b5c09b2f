"""``short@k``: k samples at once, a majority over the first m to finish.

Shorter reasoning traces tend to be the correct ones, and the first samples to finish are the
shortest. ``short@k`` starts all k samples, keeps the first ``m`` that give an answer, cancels
the rest on the server and takes the majority of those m; a tie goes to the answer that
finished first. If fewer than m samples give an answer, the vote is over those that did.

Options: ``m`` (1..k; default ceil(k/2)) and ``extractor`` (as for ``vote``). Cancelled
samples are charged for what they had produced, as in ``vote``.
"""

from __future__ import annotations

import math

from router.core.types import StrategyResult
from router.errors import InvalidRequest
from router.strategies.base import Options, RunContext, Strategy, check_options, register
from router.strategies.extract import get_extractor
from router.strategies.vote import Tally, check_k, run_vote, sampling_template


class Short(Strategy):
    kind = "short"

    def __init__(self, k: int, m: int | None = None, extractor: str = "auto") -> None:
        self.k = k
        self.m = m if m is not None else math.ceil(k / 2)
        self.extractor = extractor

    @property
    def name(self) -> str:
        return f"short@{self.k}"

    @property
    def samples(self) -> int:
        return self.k

    async def run(self, ctx: RunContext) -> StrategyResult:
        m = self.m

        def enough(tally: Tally, outstanding: int) -> bool:
            return tally.answered >= m

        outcome = await run_vote(
            ctx.backend,
            sampling_template(ctx),
            self.k,
            get_extractor(self.extractor),
            stop=enough,
            by_arrival=True,
        )
        await ctx.emit(outcome.winner.text)
        detail = outcome.detail(self.extractor)
        detail["m"] = m
        return StrategyResult(
            outcome.winner.text,
            outcome.usage.input_tokens,
            outcome.usage.output_tokens,
            outcome.usage.samples,
            detail=detail,
            usage_estimated=outcome.usage.estimated,
        )


def _make(k: int | None, options: Options) -> Strategy:
    k = check_k("short", k)
    check_options("short", options, {"m": int, "extractor": str})
    m = options.get("m")
    if m is not None and not 1 <= m <= k:
        raise InvalidRequest(f"strategy 'short': option 'm' must be within 1..{k}, got {m}")
    extractor = str(options.get("extractor", "auto"))
    try:
        get_extractor(extractor)
    except InvalidRequest as exc:
        raise InvalidRequest(f"strategy 'short': option 'extractor': {exc.message}") from None
    return Short(k, m, extractor)


register("short", _make)

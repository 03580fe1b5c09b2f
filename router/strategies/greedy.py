"""``greedy``: one sample at temperature 0, streamed as it is produced."""

from __future__ import annotations

from router.core.types import SampleRequest, StrategyResult
from router.errors import InvalidRequest
from router.strategies.base import (
    Options,
    RunContext,
    Strategy,
    check_options,
    collect_sample,
    register,
)


class Greedy(Strategy):
    kind = "greedy"

    @property
    def name(self) -> str:
        return "greedy"

    @property
    def samples(self) -> int:
        return 1

    async def run(self, ctx: RunContext) -> StrategyResult:
        req = SampleRequest(
            prompt=ctx.prompt,
            max_tokens=ctx.max_tokens,
            temperature=0.0,
            seed=0,
            timeout_s=ctx.timeout_s,
        )
        result = await collect_sample(ctx.backend, req, ctx.emit)
        return StrategyResult(
            result.text,
            result.input_tokens,
            result.output_tokens,
            1,
            usage_estimated=result.usage_estimated,
        )


def _make(k: int | None, options: Options) -> Strategy:
    if k is not None:
        raise InvalidRequest("strategy 'greedy' takes no @k")
    check_options("greedy", options, {})
    return Greedy()


register("greedy", _make)

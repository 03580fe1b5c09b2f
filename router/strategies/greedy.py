"""``greedy``: one sample at temperature 0, streamed as it is produced."""

from __future__ import annotations

from router.core.protocols import Backend
from router.core.types import SampleRequest, StrategyResult
from router.errors import InvalidRequest
from router.strategies.base import Emit, Strategy, collect_sample, register


class Greedy(Strategy):
    kind = "greedy"

    @property
    def name(self) -> str:
        return "greedy"

    @property
    def samples(self) -> int:
        return 1

    async def run(
        self,
        backend: Backend,
        prompt: str,
        *,
        max_tokens: int,
        timeout_s: float | None,
        emit: Emit,
    ) -> StrategyResult:
        req = SampleRequest(
            prompt=prompt, max_tokens=max_tokens, temperature=0.0, seed=0, timeout_s=timeout_s
        )
        result = await collect_sample(backend, req, emit)
        return StrategyResult(result.text, result.input_tokens, result.output_tokens, 1)


def _make(k: int | None) -> Strategy:
    if k is not None:
        raise InvalidRequest("strategy 'greedy' takes no @k")
    return Greedy()


register("greedy", _make)

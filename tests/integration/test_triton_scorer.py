"""TritonScorer and the scored strategies against the demo reward models on a real Triton
server (PyTriton), started for this module with only the scorer models bound."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator

import pytest

from router.backends.demo.answers import FAULT_UNAVAILABLE
from router.backends.demo.launcher import DemoProcess, free_port
from router.backends.demo.scorer_model import (
    DEMO_PRM_MODEL,
    DEMO_REWARD_MODEL,
    SCORE_RIGHT,
    SCORE_UNKNOWN,
    SCORE_WRONG,
    SCORER_MAX_BATCH,
)
from router.backends.triton_scorer import TritonScorer
from router.core.types import SampleRequest, SampleResult, StrategyResult, TextDelta
from router.errors import BackendError
from router.strategies.base import RunContext, Strategy, parse_strategy
from router.strategies.beam import Beam
from router.strategies.best import Best

pytestmark = pytest.mark.integration

ARITHMETIC = "What is 17*23?"
RIGHT = "17 × 23 = 17 × 20 + 17 × 3 = 340 + 51 = 391.\n\nAnswer: 391"
WRONG = "17 × 23 = 17 × 20 + 17 × 3 = 340 + 51 = 381.\n\nAnswer: 381"


@pytest.fixture(scope="module")
def scorer_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gRPC ``host:port`` of a Triton server serving ``demo-reward`` and ``demo-prm``."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "router.backends.demo.scorer_model",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--exit-timeout-s",
        "0",
    ]
    log = tmp_path_factory.mktemp("scorer-triton") / "scorer-triton.log"
    process = DemoProcess("scorer Triton server", argv, log)
    try:
        for model in (DEMO_REWARD_MODEL, DEMO_PRM_MODEL):
            process.wait_until(f"http://127.0.0.1:{http_port}/v2/models/{model}/ready", 120.0)
        yield f"127.0.0.1:{grpc_port}"
    finally:
        process.stop()


@pytest.fixture
async def reward(scorer_endpoint: str) -> AsyncIterator[TritonScorer]:
    scorer = TritonScorer(scorer_endpoint, DEMO_REWARD_MODEL, timeout_s=10.0)
    yield scorer
    await scorer.aclose()


class SeededBackend:
    """A fake tier: the reply is ``script(request)``, cut at the first stop string."""

    def __init__(self, script: Callable[[SampleRequest], str]) -> None:
        self.script = script
        self.requests: list[SampleRequest] = []

    @property
    def tier(self) -> str:
        return "fake"

    @property
    def max_n(self) -> int:
        return 1

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        self.requests.append(request)
        text = self.script(request)
        for stop in request.stop:
            if stop in text:
                text = text[: text.index(stop)]
        yield TextDelta(text)
        yield SampleResult(text, len(request.prompt) + len(request.continuation), len(text))

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def run(strategy: Strategy, backend: SeededBackend, prompt: str) -> StrategyResult:
    emitted: list[str] = []

    async def emit(text: str) -> None:
        emitted.append(text)

    result = await strategy.run(RunContext(backend, prompt, 512, 20.0, emit))
    assert "".join(emitted) == result.answer
    return result


async def test_right_answer_scores_higher_than_wrong(reward: TritonScorer) -> None:
    scores = await reward.score(ARITHMETIC, [WRONG, RIGHT, "No idea."], timeout_s=5.0)
    assert scores == pytest.approx([SCORE_WRONG, SCORE_RIGHT, SCORE_UNKNOWN])


async def test_more_pairs_than_one_batch_keep_their_order(reward: TritonScorer) -> None:
    responses = [RIGHT if i % 7 == 3 else WRONG for i in range(2 * SCORER_MAX_BATCH + 5)]
    scores = await reward.score(ARITHMETIC, responses, timeout_s=10.0)
    right = [i for i, s in enumerate(scores) if s > SCORE_UNKNOWN]
    assert right == [i for i in range(len(responses)) if i % 7 == 3]


async def test_process_reward_rates_partial_traces(scorer_endpoint: str) -> None:
    prm = TritonScorer(scorer_endpoint, DEMO_PRM_MODEL)
    prompt = "What is (12+7)*3 - 4/8?"
    try:
        good, slipped, finished = await prm.score(
            prompt,
            [
                "Step by step:\n- 12 + 7 = 19\n- 19 × 3 = 57",
                "Step by step:\n- 12 + 7 = 19\n- 19 × 3 = 67",
                "- 12 + 7 = 19\n- 19 × 3 = 57\n- 4 ÷ 8 = 0.5\n- 57 − 0.5 = 56.5\n\nAnswer: 56.5",
            ],
            timeout_s=5.0,
        )
    finally:
        await prm.aclose()
    assert slipped < SCORE_UNKNOWN < good < finished


async def test_best_of_k_with_the_triton_scorer_picks_the_right_answer(
    scorer_endpoint: str,
) -> None:
    replies = [WRONG, "Roughly 400.", RIGHT, WRONG]
    backend = SeededBackend(lambda r: replies[r.seed])
    strategy = parse_strategy(
        "best@4", {"scorer": {"triton": scorer_endpoint, "model": DEMO_REWARD_MODEL}}
    )
    assert isinstance(strategy, Best)
    try:
        result = await run(strategy, backend, ARITHMETIC)
    finally:
        await strategy.aclose()
    assert result.answer == RIGHT
    assert result.detail["scorer"] == f"triton:{DEMO_REWARD_MODEL}"
    assert result.detail["best_score"] == pytest.approx(SCORE_RIGHT)
    assert result.samples == 4 and not any(r.logprobs for r in backend.requests)


ARITH_STEPS = [
    "- 12 + 7 = 19",
    "- 19 × 3 = 57",
    "- 4 ÷ 8 = 0.5",
    "- 57 − 0.5 = 56.5",
    "Answer: 56.5",
]
SLIPS = ["- 12 + 7 = 18", "- 19 × 3 = 67", "- 4 ÷ 8 = 0.8", "- 57 − 0.5 = 57.5", "Answer: 57"]


async def test_beam_search_with_the_process_reward_avoids_slips(scorer_endpoint: str) -> None:
    def script(request: SampleRequest) -> str:
        done = request.continuation.count("\n")
        if done >= len(ARITH_STEPS):
            return ""
        # Odd seeds slip: every beam's two continuations hold one good step and one slip,
        # so only a search that scores each step keeps all five right.
        step = ARITH_STEPS[done] if request.seed % 2 == 0 else SLIPS[done]
        return step + "\n"

    backend = SeededBackend(script)
    strategy = parse_strategy(
        "beam@2", {"scorer": {"triton": scorer_endpoint, "model": DEMO_PRM_MODEL}}
    )
    assert isinstance(strategy, Beam)
    try:
        result = await run(strategy, backend, "What is (12+7)*3 - 4/8?")
    finally:
        await strategy.aclose()
    assert result.answer == "\n".join(ARITH_STEPS)
    assert result.detail["finished"] is True


async def test_unknown_model_is_a_clear_backend_error(scorer_endpoint: str) -> None:
    scorer = TritonScorer(scorer_endpoint, "no-such-reward")
    try:
        with pytest.raises(BackendError) as info:
            await scorer.score(ARITHMETIC, [RIGHT], timeout_s=5.0)
    finally:
        await scorer.aclose()
    message = info.value.message
    assert "'no-such-reward'" in message and scorer_endpoint in message
    assert "no such model" in message
    assert not info.value.retriable


async def test_model_failure_is_reported_without_a_traceback(reward: TritonScorer) -> None:
    with pytest.raises(BackendError) as info:
        await reward.score(f"{FAULT_UNAVAILABLE} {ARITHMETIC}", [RIGHT], timeout_s=5.0)
    message = info.value.message
    assert "scorer unavailable (fault requested)" in message
    assert "Traceback" not in message and DEMO_REWARD_MODEL in message


async def test_unreachable_server_is_retriable() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    scorer = TritonScorer(endpoint, DEMO_REWARD_MODEL, timeout_s=5.0)
    try:
        with pytest.raises(BackendError) as info:
            await scorer.score(ARITHMETIC, [RIGHT], timeout_s=None)
    finally:
        await scorer.aclose()
    assert info.value.retriable
    assert endpoint in info.value.message and "unavailable" in info.value.message


async def test_a_closed_scorer_refuses_calls(scorer_endpoint: str) -> None:
    scorer = TritonScorer(scorer_endpoint, DEMO_REWARD_MODEL)
    assert await scorer.score(ARITHMETIC, [RIGHT], timeout_s=5.0) == pytest.approx([SCORE_RIGHT])
    await scorer.aclose()
    with pytest.raises(BackendError, match="closed"):
        await scorer.score(ARITHMETIC, [RIGHT], timeout_s=5.0)

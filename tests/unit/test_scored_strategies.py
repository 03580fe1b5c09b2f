"""best@k, beam@w and think@N against a fake language model, plus their scorers."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

import pytest

from router.backends.demo.scorer_model import (
    SCORE_BAD_STEP,
    SCORE_RIGHT,
    SCORE_UNKNOWN,
    SCORE_WRONG,
    check_steps,
    outcome_reward,
    process_reward,
    reference_answer,
)
from router.backends.triton_scorer import TritonScorer
from router.core.types import Price, SampleRequest, SampleResult, StrategyResult, TextDelta
from router.errors import BackendError, InvalidRequest
from router.strategies.base import RunContext, parse_strategy
from router.strategies.beam import Beam
from router.strategies.best import Best
from router.strategies.scorers import AnyScorer, MeanLogprobScorer, build_scorer
from router.strategies.think import Think

PROMPT = "What is 6*7?"


@dataclass(frozen=True)
class Reply:
    """What the fake model would write from the continuation to the end of its answer."""

    text: str
    mean_logprob: float | None = None


class FakeLM:
    """A backend whose tokens are characters, honouring max_tokens, stop, continuation,
    seed and logprobs. ``script`` decides the reply to each request; input tokens are the
    characters of prompt plus continuation, and a matched stop string costs one token."""

    def __init__(
        self,
        script: Callable[[SampleRequest], Reply],
        *,
        honour_stop: bool = True,
        fail_when: Callable[[SampleRequest], bool] | None = None,
    ) -> None:
        self.script = script
        self.honour_stop = honour_stop
        self.fail_when = fail_when
        self.requests: list[SampleRequest] = []
        self.results: list[SampleResult] = []

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
        if self.fail_when is not None and self.fail_when(request):
            yield TextDelta("par")
            raise BackendError("fake: connection lost", partial_output_tokens=3)
        reply = self.script(request)
        out: list[str] = []
        count, finish, i = 0, "stop", 0
        while i < len(reply.text):
            if count >= request.max_tokens:
                finish = "length"
                break
            count += 1
            if self.honour_stop and any(reply.text.startswith(s, i) for s in request.stop):
                break
            out.append(reply.text[i])
            yield TextDelta(reply.text[i])
            i += 1
        result = SampleResult(
            "".join(out),
            len(request.prompt) + len(request.continuation),
            count,
            finish,
            mean_logprob=reply.mean_logprob if request.logprobs else None,
        )
        self.results.append(result)
        yield result

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class TextScorer:
    """A scorer from a function of the response text; counts its calls."""

    name = "table"

    def __init__(self, fn: Callable[[str], float], *, fail: bool = False) -> None:
        self.fn = fn
        self.fail = fail
        self.calls: list[list[str]] = []
        self.closed = False

    async def score(
        self, prompt: str, responses: Sequence[str], *, timeout_s: float | None
    ) -> list[float]:
        self.calls.append(list(responses))
        if self.fail:
            raise BackendError("scorer model 'x' on Triton at h:1 is unavailable", retriable=True)
        return [self.fn(r) for r in responses]

    async def aclose(self) -> None:
        self.closed = True


async def run(
    strategy: Best | Beam | Think, backend: FakeLM, *, max_tokens: int = 256
) -> tuple[StrategyResult, list[str]]:
    emitted: list[str] = []

    async def emit(text: str) -> None:
        emitted.append(text)

    ctx = RunContext(backend, PROMPT, max_tokens, 30.0, emit)
    return await strategy.run(ctx), emitted


def by_seed(texts: Sequence[str], logprobs: Sequence[float | None] | None = None) -> FakeLM:
    def script(request: SampleRequest) -> Reply:
        lp = logprobs[request.seed] if logprobs is not None else None
        return Reply(texts[request.seed], lp)

    return FakeLM(script)


def value_of(text: str) -> float:
    m = re.search(r"Answer: (\d+)", text)
    return float(m.group(1)) if m else 0.0


# ---------------------------------------------------------------------------------------
# best@k


async def test_best_picks_the_highest_score_and_emits_it_once() -> None:
    texts = ["Answer: 3", "Answer: 9", "Answer: 5", "Answer: 9 again"]
    backend = by_seed(texts)
    scorer = TextScorer(value_of)
    result, emitted = await run(Best(4, scorer), backend)

    assert result.answer == "Answer: 9"  # ties go to the lowest index
    assert emitted == ["Answer: 9"]
    assert scorer.calls == [texts]
    assert result.detail == {"scorer": "table", "best_score": 9.0}
    assert result.samples == 4
    assert sorted(r.seed for r in backend.requests) == [0, 1, 2, 3]
    assert all(r.temperature == 0.7 and not r.logprobs for r in backend.requests)
    assert result.input_tokens == 4 * len(PROMPT)
    assert result.output_tokens == sum(len(t) for t in texts)


async def test_best_with_the_logprob_scorer_asks_for_logprobs() -> None:
    backend = by_seed(["Answer: 1", "Answer: 2", "Answer: 3"], [-2.0, -0.3, -1.0])
    result, emitted = await run(Best(3, MeanLogprobScorer()), backend)

    assert all(r.logprobs for r in backend.requests)
    assert result.answer == "Answer: 2" == emitted[0]
    assert result.detail == {"scorer": "logprob", "best_score": -0.3}


async def test_best_falls_back_to_a_vote_without_logprobs() -> None:
    backend = by_seed(["Answer: 1", "Answer: 4", "It is 4."], [None, None, None])
    result, _ = await run(Best(3, MeanLogprobScorer()), backend)

    assert result.answer == "Answer: 4"
    assert result.detail == {"scorer": "logprob", "fallback": "vote"}


async def test_best_falls_back_to_a_vote_when_the_scorer_fails() -> None:
    backend = by_seed(["Answer: 8", "x = 7", "Answer: 7"])
    scorer = TextScorer(value_of, fail=True)
    result, emitted = await run(Best(3, scorer), backend)

    assert result.answer == "x = 7" == emitted[0]
    assert result.detail["fallback"] == "vote"
    assert "best_score" not in result.detail
    assert result.samples == 3


async def test_best_sample_failure_raises_with_what_was_spent() -> None:
    backend = FakeLM(lambda r: Reply("Answer: 1"), fail_when=lambda r: r.seed == 2)
    with pytest.raises(BackendError) as info:
        await run(Best(3, TextScorer(value_of)), backend)
    assert info.value.partial_output_tokens >= 3


async def test_best_is_registered_with_options() -> None:
    strategy = parse_strategy("best@3", {"parallel": 1})
    assert isinstance(strategy, Best)
    assert strategy.name == "best@3" and strategy.samples == 3
    assert isinstance(strategy.scorer, MeanLogprobScorer)

    backend = by_seed(["Answer: 1", "Answer: 2", "Answer: 3"], [-1.0, -1.0, -0.5])
    result, _ = await run(strategy, backend)
    assert result.answer == "Answer: 3"

    remote = parse_strategy("best@2", {"scorer": {"triton": "h:1", "model": "demo-reward"}})
    assert isinstance(remote, Best) and isinstance(remote.scorer, TritonScorer)
    assert remote.scorer.name == "triton:demo-reward"
    await remote.aclose()


async def test_strategy_aclose_closes_its_scorer() -> None:
    scorer = TextScorer(value_of)
    await Best(2, scorer).aclose()
    assert scorer.closed


# ---------------------------------------------------------------------------------------
# beam@w

STEPS_BEFORE_ANSWER = 3


def stepwise(request: SampleRequest) -> Reply:
    """Three steps, each good or bad by seed, then 'Answer: 42' and the end of the answer."""
    done = request.continuation.count("\n")
    if done < STEPS_BEFORE_ANSWER:
        quality = "good" if request.seed % 3 == 0 else "bad"
        return Reply(f"{quality} step {done} (s{request.seed})\nnext line")
    if done == STEPS_BEFORE_ANSWER:
        return Reply("Answer: 42")
    return Reply("")


def prm(trace: str) -> float:
    return trace.count("good") - 5 * trace.count("bad") + (1 if "Answer: 42" in trace else 0)


async def test_beam_keeps_the_best_w_and_finishes() -> None:
    backend = FakeLM(stepwise)
    scorer = TextScorer(prm)
    strategy = Beam(2, scorer, expand=3)
    result, emitted = await run(strategy, backend)

    assert emitted == [result.answer]
    assert "bad" not in result.answer
    assert result.answer.count("good") == STEPS_BEFORE_ANSWER
    assert result.answer.endswith("\nAnswer: 42")
    assert result.detail["finished"] is True
    assert result.detail["scorer"] == "table"

    # Round 1 sampled w × expand continuations of the empty answer, and round 2 continued
    # exactly the two best distinct traces of round 1, expand times each.
    first = [r for r in backend.requests if r.continuation == ""]
    assert len(first) == 6
    round1 = [f"{s.text}\n" for s in backend.results[:6]]
    best_two = sorted(set(round1), key=lambda t: -prm(t))[:2]
    second = [r for r in backend.requests if r.continuation.count("\n") == 1]
    assert sorted({r.continuation for r in second}) == sorted(best_two)
    assert len(second) == 2 * 3

    assert all(r.stop == ("\n",) and r.temperature == 0.7 for r in backend.requests)
    seeds = [r.seed for r in backend.requests]
    assert len(set(seeds)) == len(seeds)
    assert result.samples == len(backend.requests) <= strategy.samples
    assert result.input_tokens == sum(len(r.prompt) + len(r.continuation) for r in backend.requests)
    assert result.output_tokens == sum(r.output_tokens for r in backend.results)
    # The scorer saw the traces without the delimiter appended after their last step.
    assert all(not t.endswith("\n") for call in scorer.calls for t in call if t)


async def test_beam_with_logprobs_follows_the_likeliest_steps() -> None:
    def script(request: SampleRequest) -> Reply:
        done = request.continuation.count("\n")
        if done >= 2:
            return Reply("")
        lp = -0.1 if request.seed % 2 == 1 else -3.0
        return Reply(f"s{request.seed}\n", lp)

    backend = FakeLM(script)
    result, _ = await run(Beam(1, MeanLogprobScorer(), expand=2), backend)

    assert all(r.logprobs for r in backend.requests)
    picked = [int(x) for x in re.findall(r"s(\d+)", result.answer)]
    assert len(picked) == 2 and all(s % 2 == 1 for s in picked)
    assert result.detail["scorer"] == "logprob"


async def test_beam_stops_at_the_request_max_tokens() -> None:
    backend = FakeLM(lambda r: Reply("x" * 500))  # never a delimiter, never an end
    result, _ = await run(Beam(2, TextScorer(len), step_tokens=16), backend, max_tokens=40)

    assert result.detail["finished"] is True
    assert len(result.answer) == 40
    assert all(r.max_tokens <= 16 for r in backend.requests)
    # 40 tokens at 16 per step: three rounds, the last one asking only for what is left.
    assert result.detail["steps"] == 3
    assert {r.max_tokens for r in backend.requests if len(r.continuation) == 32} == {8}


async def test_beam_returns_the_best_trace_when_max_steps_run_out() -> None:
    backend = FakeLM(lambda r: Reply(f"line {r.seed}\n"))
    result, _ = await run(Beam(2, TextScorer(lambda t: t.count("1")), max_steps=3), backend)

    assert result.detail["finished"] is False
    assert result.detail["steps"] == 3
    assert result.answer.count("\n") == 2  # three steps, no trailing delimiter
    assert result.samples == 2 * 2 * 3


async def test_beam_failure_carries_the_tokens_already_spent() -> None:
    backend = FakeLM(stepwise, fail_when=lambda r: r.continuation.count("\n") == 2)
    with pytest.raises(BackendError) as info:
        await run(Beam(2, TextScorer(prm)), backend)
    finished = sum(r.output_tokens for r in backend.results)
    assert info.value.partial_output_tokens >= finished > 0


async def test_beam_scorer_failure_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unavailable") as info:
        await run(Beam(2, TextScorer(prm, fail=True)), FakeLM(stepwise))
    assert info.value.partial_output_tokens > 0


# ---------------------------------------------------------------------------------------
# think@N

LONG_THOUGHT = "Let me think. " * 30


def thinker(thought: str, answer: str = " 42.") -> Callable[[SampleRequest], Reply]:
    def script(request: SampleRequest) -> Reply:
        if request.continuation == "<think>\n":
            return Reply(thought)
        assert request.continuation.endswith("Final answer:")
        return Reply(answer)

    return script


async def test_think_enforces_the_budget_and_forces_the_answer() -> None:
    backend = FakeLM(thinker(LONG_THOUGHT + "\n</think>\nAnswer"))
    result, emitted = await run(Think(50), backend)

    first, second = backend.requests
    assert first.continuation == "<think>\n"
    assert first.max_tokens == 50 and first.stop == ("</think>",)
    assert first.temperature == 0.0
    thinking = LONG_THOUGHT[:50]
    assert second.continuation == "<think>\n" + thinking + "\n</think>\nFinal answer:"
    assert second.max_tokens == 64 and second.temperature == 0.0
    assert result.answer == "42." == "".join(emitted)
    assert result.detail == {"thinking_tokens": 50, "budget": 50, "budget_hit": True}
    assert result.samples == 2
    assert result.input_tokens == 2 * len(PROMPT) + len(first.continuation) + len(
        second.continuation
    )
    assert result.output_tokens == 50 + len(" 42.")


async def test_think_under_budget_stops_at_the_close_tag() -> None:
    backend = FakeLM(thinker("Short thought.\n</think>\nrest"))
    result, _ = await run(Think(500), backend)

    second = backend.requests[1]
    assert second.continuation == "<think>\nShort thought.\n\n</think>\nFinal answer:"
    assert result.detail["budget_hit"] is False
    assert result.detail["thinking_tokens"] == len("Short thought.\n") + 1


async def test_think_cuts_at_the_close_tag_when_the_backend_ignores_stop() -> None:
    backend = FakeLM(thinker("Brief.\n</think>\nFinal answer: 7"), honour_stop=False)
    await run(Think(500), backend)
    assert backend.requests[1].continuation == "<think>\nBrief.\n\n</think>\nFinal answer:"


async def test_think_answer_is_capped_by_the_request_and_charged_on_failure() -> None:
    backend = FakeLM(thinker("ok", " " + "9" * 100))
    result, _ = await run(Think(10, answer_tokens=64), backend, max_tokens=5)
    assert backend.requests[1].max_tokens == 5
    assert result.answer == "9999"

    failing = FakeLM(thinker("ok"), fail_when=lambda r: r.continuation != "<think>\n")
    with pytest.raises(BackendError) as info:
        await run(Think(10), failing)
    assert info.value.partial_output_tokens == 3 + len("ok")


# ---------------------------------------------------------------------------------------
# reservation bounds


def noisy(rng_seed: int) -> Callable[[SampleRequest], Reply]:
    """Random step lengths, random delimiters and random ends, fixed by the request."""

    def script(request: SampleRequest) -> Reply:
        rng = random.Random(f"{rng_seed}|{request.continuation}|{request.seed}")
        parts = []
        for _ in range(rng.randrange(0, 6)):
            parts.append("w" * rng.randrange(0, 60))
            parts.append(rng.choice(["\n", "\n\n", " ", "</think>", ""]))
        return Reply("".join(parts), rng.uniform(-3, 0))

    return script


def price_of(price: Price) -> Callable[[str], Price]:
    return lambda tier: price


@pytest.mark.parametrize("trial", range(12))
async def test_reservation_bounds_cover_actual_costs(trial: int) -> None:
    rng = random.Random(trial)
    price = Price(rng.uniform(0.01, 5.0), rng.uniform(0.01, 20.0))
    max_tokens = rng.randrange(1, 120)
    scorers: list[AnyScorer] = [MeanLogprobScorer(), TextScorer(lambda t: float(len(t) % 7))]
    beam_scorer = rng.choice(scorers)
    strategies: list[Best | Beam | Think] = [
        Best(rng.randrange(2, 6), MeanLogprobScorer()),
        Beam(
            rng.randrange(1, 4),
            beam_scorer,
            expand=rng.randrange(1, 4),
            max_steps=rng.randrange(1, 6),
            step_tokens=rng.randrange(1, 40),
            delimiter=rng.choice(["\n", "\n\n"]),
        ),
        Think(rng.randrange(1, 200), answer_tokens=rng.randrange(1, 80)),
    ]
    for strategy in strategies:
        backend = FakeLM(noisy(trial))
        result, _ = await run(strategy, backend, max_tokens=max_tokens)
        actual = price.micros(result.input_tokens, result.output_tokens)
        bound = strategy.reservation_micros("fake", price_of(price), len(PROMPT), max_tokens)
        assert actual <= bound, (strategy.name, actual, bound)
        assert result.samples == len(backend.requests) <= strategy.samples


# ---------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("best@3", {"scorer": "bleu"}, "scorer"),
        ("best@3", {"scorer": {"triton": "h:1"}}, "model"),
        ("best@3", {"scorer": {"triton": "h:1", "model": "m", "retries": 2}}, "retries"),
        ("best@3", {"scorer": {"triton": "h:1", "model": "m", "timeout_s": -1}}, "timeout_s"),
        ("best@3", {"scorer": 3}, "scorer"),
        ("best@3", {"parallel": 0}, "parallel"),
        ("best@3", {"temperature": 0.2}, "temperature"),
        ("best", {}, "best@4"),
        ("beam@2", {}, "scorer"),
        ("beam@2", {"scorer": "logprob", "delimiter": ""}, "delimiter"),
        ("beam@2", {"scorer": "logprob", "max_steps": 0}, "max_steps"),
        ("beam@2", {"scorer": "logprob", "expand": 40}, "expand"),
        ("beam@2", {"scorer": "logprob", "step_tokens": "many"}, "step_tokens"),
        ("beam@2", {"scorer": "logprob", "width": 3}, "width"),
        ("beam@2", {"scorer": {"model": "m"}}, "triton"),
        ("think@64", {"answer_tokens": 0}, "answer_tokens"),
        ("think@64", {"think_close": "  "}, "think_close"),
        ("think@64", {"budget": 3}, "budget"),
        ("think", {}, "think@1024"),
    ],
)
def test_bad_options_are_refused_by_name(name: str, options: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(named)):
        parse_strategy(name, options)


def test_build_scorer() -> None:
    assert isinstance(build_scorer("logprob"), MeanLogprobScorer)
    scorer = build_scorer({"triton": "127.0.0.1:8001", "model": "demo-prm", "timeout_s": 2})
    assert isinstance(scorer, TritonScorer)
    assert (scorer.endpoint, scorer.model) == ("127.0.0.1:8001", "demo-prm")


def test_registered_beam_and_think_options_apply() -> None:
    beam = parse_strategy(
        "beam@3", {"scorer": "logprob", "expand": 2, "max_steps": 4, "step_tokens": 32}
    )
    assert isinstance(beam, Beam)
    assert (beam.width, beam.expand, beam.max_steps, beam.step_tokens) == (3, 2, 4, 32)
    assert beam.samples == 3 * 2 * 4
    think = parse_strategy("think@256", {"answer_tokens": 16, "answer_prefix": "Answer:"})
    assert isinstance(think, Think)
    assert (think.name, think.samples, think.answer_prefix) == ("think@256", 2, "Answer:")


# ---------------------------------------------------------------------------------------
# the demo reward functions


def test_demo_outcome_reward_knows_the_right_answer() -> None:
    assert reference_answer("What is 17*23?") == "391"
    assert outcome_reward("What is 17*23?", "17 × 23 = 391.\n\nAnswer: 391") == SCORE_RIGHT
    assert outcome_reward("What is 17*23?", "Answer: 392") == SCORE_WRONG
    assert outcome_reward("What is 17*23?", "I am not sure.") == SCORE_UNKNOWN
    assert outcome_reward("Explain why rivers meander.", "Answer: 3") == SCORE_UNKNOWN
    choice = "Which is a fruit?\nA) car\nB) apple\nC) rock"
    right = reference_answer(choice)
    assert right in {"A", "B", "C"}
    wrong = next(x for x in "ABC" if x != right)
    assert outcome_reward(choice, f"Answer: {right}") == SCORE_RIGHT
    assert outcome_reward(choice, f"Answer: {wrong}") == SCORE_WRONG


def test_demo_process_reward_sinks_a_wrong_step() -> None:
    prompt = "What is (12+7)*3 - 4/8?"
    good = "Step by step:\n- 12 + 7 = 19\n- 19 × 3 = 57"
    bad = "Step by step:\n- 12 + 7 = 19\n- 19 × 3 = 67"
    assert check_steps(good).wrong == 0 and check_steps(bad).wrong == 1
    assert process_reward(prompt, bad) == SCORE_BAD_STEP
    assert process_reward(prompt, "Step by step:\n- 12 + 7 = 19") < process_reward(prompt, good)
    assert process_reward(prompt, good + "\n- 4 ÷ 8 = 0.5\n- 57 − 0.5 = 56.5\n\nAnswer: 56.5") == (
        SCORE_RIGHT
    )
    assert process_reward(prompt, good + "\n\nAnswer: 57") == SCORE_WRONG
    # Rounded decimals from a division are not taken for mistakes.
    assert check_steps("- 10 ÷ 3 = 3.333333\n- 3.333333 × 3 = 10").wrong == 0

"""The simulated model behind the demo backends: deterministic, right where it should be."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
    DEMO_TRITON_MODEL,
    FAULT_MID_STREAM,
    count_tokens,
    find_expression,
    format_number,
    simulate,
    tokenize,
)

STRONG = DEMO_OPENAI_MODELS["demo-premium"].skill
WEAK = DEMO_TRITON_MODEL.skill

# (prompt, reference value computed here by Python from the same numbers)
ARITHMETIC = [
    ("What is 17*23?", Fraction(17 * 23)),
    ("What is 17 x 23?", Fraction(17 * 23)),
    ("Compute 12 + 7 * 3", Fraction(12 + 7 * 3)),
    ("Calculate (17*23 + 45) / 5 - 12", Fraction(17 * 23 + 45, 5) - 12),
    ("What is 1,234 * 56?", Fraction(1234 * 56)),
    ("What is 2^10?", Fraction(2**10)),
    ("What is 10 divided by 4?", Fraction(10, 4)),
    ("What is 250 minus 75 plus 3?", Fraction(250 - 75 + 3)),
    ("What is 3.5 * 4?", Fraction(14)),
    ("What is -8 + 15?", Fraction(7)),
    ("What is 1/3 + 1/6?", Fraction(1, 2)),
    ("How much is 999 * 999?", Fraction(999 * 999)),
    ("What is 47 % 5?", Fraction(47 % 5)),
]

TEXT_PROMPTS = [
    "What is the capital of France?",
    "Explain how TCP congestion control works and why it matters for video streaming.",
    "Write a Python function that reverses a linked list in place.",
    "Summarise the causes of the French Revolution.",
    "Is tea healthy?",
]


def final_answer(text: str) -> str:
    last = text.strip().splitlines()[-1]
    assert last.startswith("Answer: ")
    return last.removeprefix("Answer: ")


@given(st.text(max_size=300))
def test_tokens_concatenate_to_the_text(text: str) -> None:
    assert "".join(tokenize(text)) == text
    assert count_tokens(text) == len(tokenize(text))


@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(
                ["What is", " 1", "e999", " 0", "**", "*", "/", "%", "(", ")", "-", "?"]
            ),
            max_size=25,
        ).map("".join),
    ),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31),
    st.floats(0.0, 2.0),
)
def test_any_prompt_gets_a_well_formed_answer(
    prompt: str, skill: float, seed: int, temperature: float
) -> None:
    answer = simulate(prompt, skill=skill, seed=seed, temperature=temperature)
    assert "".join(answer.tokens) == answer.text
    assert answer.text


def test_tokens_look_like_word_pieces() -> None:
    tokens = tokenize("Internationalisation of 1234567 items, quickly!")
    assert tokens[0] == "Intern"  # long words are cut
    assert " of" in tokens  # words keep their leading space
    assert " 123" in tokens and "456" in tokens and "7" in tokens  # digits in threes
    assert all(len(t) <= 7 for t in tokens)


@pytest.mark.parametrize("prompt", [p for p, _ in ARITHMETIC] + TEXT_PROMPTS)
def test_same_inputs_give_the_same_answer(prompt: str) -> None:
    for skill, seed, temperature in [(WEAK, 0, 0.0), (STRONG, 7, 0.8), (0.3, 123, 1.2)]:
        a = simulate(prompt, skill=skill, seed=seed, temperature=temperature)
        b = simulate(prompt, skill=skill, seed=seed, temperature=temperature)
        assert a == b
        assert "".join(a.tokens) == a.text


@pytest.mark.parametrize(("prompt", "value"), ARITHMETIC)
def test_the_strong_tier_gets_arithmetic_right(prompt: str, value: Fraction) -> None:
    for seed, temperature in [(0, 0.0), (1, 0.7), (2, 0.7), (3, 1.0)]:
        answer = simulate(prompt, skill=STRONG, seed=seed, temperature=temperature)
        assert answer.kind == "arithmetic"
        assert answer.correct is True
        assert final_answer(answer.text) == format_number(value)
        assert answer.text.endswith(format_number(value))


def test_worked_answer_for_a_product() -> None:
    answer = simulate("What is 17*23?", skill=STRONG)
    assert "17 × 20" in answer.text and "340 + 51" in answer.text
    assert answer.text.endswith("391")
    assert 10 <= len(answer.tokens) <= 60


def test_greedy_ignores_the_seed() -> None:
    for prompt in ["What is 4821 * 7733?", *TEXT_PROMPTS]:
        outs = {simulate(prompt, skill=WEAK, seed=s, temperature=0.0).text for s in range(5)}
        assert len(outs) == 1


def test_different_seeds_give_different_samples() -> None:
    for prompt in TEXT_PROMPTS[1:4]:
        outs = {simulate(prompt, skill=WEAK, seed=s, temperature=0.8).text for s in range(6)}
        assert len(outs) > 1


def test_a_weak_tier_errs_on_hard_arithmetic_and_the_strong_one_does_not() -> None:
    cases = [(f"What is {a} * {b}?", a * b) for a, b in [(4821, 7733), (9137, 2468), (6075, 8391)]]
    cases += [
        (f"What is {a} * {b} + {c}?", a * b + c)
        for a, b, c in [(3719, 5821, 947), (8462, 1357, 246)]
    ]
    for prompt, truth in cases:
        assert final_answer(simulate(prompt, skill=STRONG).text) == str(truth)
    weak_finals = [final_answer(simulate(p, skill=WEAK).text) for p, _ in cases]
    assert any(got != str(truth) for got, (_, truth) in zip(weak_finals, cases, strict=True))
    for prompt, truth in cases:
        answer = simulate(prompt, skill=WEAK)
        assert answer.correct == (final_answer(answer.text) == str(truth))


def test_wrong_answers_are_near_misses() -> None:
    prompt = "What is 4821 * 7733?"
    truth = 4821 * 7733
    wrong = [
        int(final_answer(a.text))
        for s in range(40)
        if not (a := simulate(prompt, skill=WEAK, seed=s, temperature=0.8)).correct
    ]
    assert wrong, "the weak tier should miss some samples of this prompt"
    assert all(w != truth for w in wrong)
    assert all(abs(w - truth) < truth for w in wrong)


def test_majority_vote_is_meaningful_for_a_middling_tier() -> None:
    prompt = "What is 4821 * 7733?"
    truth = str(4821 * 7733)
    finals = [
        final_answer(simulate(prompt, skill=WEAK, seed=s, temperature=0.7).text) for s in range(41)
    ]
    counts = Counter(finals)
    share = counts[truth] / len(finals)
    assert 0.3 < share < 0.95  # a single sample is unreliable
    assert len(counts) > 2  # wrong answers scatter
    assert counts.most_common(1)[0][0] == truth  # so the majority is right


def test_answer_length_follows_the_kind_of_prompt() -> None:
    short = simulate("What is the capital of France?", skill=WEAK)
    long = simulate("Explain how TCP congestion control works and why it matters.", skill=WEAK)
    code = simulate("Write a Python function that reverses a linked list.", skill=WEAK)
    assert (short.kind, long.kind, code.kind) == ("short", "long", "code")
    assert len(short.tokens) < len(long.tokens) < len(code.tokens)
    for prompt in TEXT_PROMPTS:
        for skill in (WEAK, STRONG):
            n = len(simulate(prompt, skill=skill).tokens)
            assert 20 <= n <= 600, (prompt, n)


def test_longer_prompts_get_longer_answers() -> None:
    brief = simulate("Explain caching.", skill=WEAK)
    detailed = simulate(
        "Explain caching in web applications, covering browser caches, CDNs, reverse proxies, "
        "application-level caches, invalidation strategies, and the consistency trade-offs "
        "each layer introduces for read-heavy and write-heavy workloads.",
        skill=WEAK,
    )
    assert len(detailed.tokens) > len(brief.tokens)


def test_multiple_choice_answers_with_an_offered_letter() -> None:
    prompt = "Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nD) Mercury"
    letters = {
        final_answer(simulate(prompt, skill=WEAK, seed=s, temperature=1.0).text) for s in range(20)
    }
    assert letters <= {"A", "B", "C", "D"}
    assert simulate(prompt, skill=WEAK).kind == "choice"


def test_max_tokens_cuts_the_answer() -> None:
    answer = simulate(TEXT_PROMPTS[1], skill=WEAK)
    tokens, finish = answer.limited(5)
    assert tokens == answer.tokens[:5] and finish == "length"
    tokens, finish = answer.limited(10_000)
    assert tokens == answer.tokens and finish == "stop"


@pytest.mark.parametrize(
    "prompt",
    [
        "Call me at 555-1234",
        "The meeting is on 2024-05-12.",
        "What is __import__('os').system('true')?",
        "What is (1).__class__?",
        "Tell me about the year 1989",
    ],
)
def test_non_arithmetic_is_not_evaluated(prompt: str) -> None:
    assert find_expression(prompt) is None
    assert simulate(prompt, skill=STRONG).kind != "arithmetic"


def test_huge_powers_are_refused_quickly() -> None:
    answer = simulate("What is 9**999999?", skill=STRONG)
    assert answer.kind != "arithmetic"


def test_division_by_zero_is_answered_without_a_value() -> None:
    answer = simulate("What is 7 / 0?", skill=STRONG)
    assert answer.kind == "arithmetic"
    assert final_answer(answer.text) == "undefined"


def test_fault_markers_do_not_change_the_answer() -> None:
    plain = simulate("Explain rivers", skill=WEAK)
    marked = simulate(f"Explain rivers {FAULT_MID_STREAM}", skill=WEAK)
    assert marked.text == plain.text


def test_skill_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="skill"):
        simulate("hi", skill=1.5)

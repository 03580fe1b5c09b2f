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
    FAULT_SLOW,
    MAX_RECOGNISED_CONTINUATION,
    ScriptedSample,
    continue_from,
    count_tokens,
    fault_http_status,
    find_expression,
    flaky_failures,
    format_number,
    generate,
    scripted_samples,
    simulate,
    split_continuation,
    strip_markers,
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


# ---------------------------------------------------------------------------------------
# markers, generation (stop, max_tokens, continuation, log-probabilities)


def test_markers_are_read_and_removed() -> None:
    prompt = "What is 2+2? [demo-fault:http-429] [demo-fault:flaky-3] [demo-samples:4, 5@slow]"
    assert fault_http_status(prompt) == 429
    assert flaky_failures(prompt) == 3
    assert scripted_samples(prompt) == (ScriptedSample("4"), ScriptedSample("5", slow=True))
    assert strip_markers(prompt) == "What is 2+2?"
    assert fault_http_status("What is 2+2?") is None
    assert flaky_failures("What is 2+2?") == 0
    assert scripted_samples("What is 2+2?") == ()
    for marker in ("[demo-fault:http-500]", "[demo-fault:flaky-2]", FAULT_SLOW):
        assert simulate(f"Explain rivers {marker}", skill=WEAK) == simulate(
            "Explain rivers", skill=WEAK
        )


def test_scripted_samples_cycle_with_the_seed_whatever_the_temperature() -> None:
    prompt = "What is 17*23? [demo-samples:391,390@slow,12]"
    answers = [simulate(prompt, skill=WEAK, seed=s, temperature=0.0) for s in range(5)]
    assert [final_answer(a.text) for a in answers] == ["391", "390", "12", "391", "390"]
    assert [a.slow for a in answers] == [False, True, False, False, True]
    assert [a.correct for a in answers[:3]] == [True, False, False]  # checked against 17*23
    free = simulate("Name a colour [demo-samples:red]", skill=WEAK)
    assert final_answer(free.text) == "red" and free.correct is None


def test_stop_strings_cut_the_generation() -> None:
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=STRONG)
    cut = generate(prompt, skill=STRONG, stop=(" + ", " ="))
    assert cut.text == full.text[: full.text.index(" =")]
    assert cut.finish == "stop" and cut.stopped_by == " ="
    # the tokens up to the one completing the stop string count, even those left out
    assert cut.output_tokens == len(cut.logprobs) == len(tokenize(cut.text)) + 1
    assert cut.pieces[-1] == ""
    kept = generate(prompt, skill=STRONG, stop=(" =",), include_stop=True)
    assert kept.text == full.text[: full.text.index(" =") + 2]
    assert kept.output_tokens == cut.output_tokens
    assert generate(prompt, skill=STRONG, stop=("",)).text == full.text


def test_max_tokens_wins_over_a_later_stop_string() -> None:
    prompt = TEXT_PROMPTS[1]
    gen = generate(prompt, skill=WEAK, max_tokens=5, stop=("Taken together",))
    assert gen.pieces == simulate(prompt, skill=WEAK).tokens[:5]
    assert gen.finish == "length"


def test_continuation_picks_up_the_models_own_answer() -> None:
    prompt = "What is 17*23?"
    full = simulate(prompt, skill=STRONG).text
    rest = continue_from(simulate(prompt, skill=STRONG), full[:20])
    assert full[:20] + rest.text == full
    assert "".join(rest.tokens) == rest.text and rest.correct is True
    foreign = continue_from(simulate(prompt, skill=STRONG), "Hmm, let me see")
    assert foreign.text == "\n\n" + full
    assert continue_from(simulate(prompt, skill=STRONG), "Sure: ").text == full


FEW_SHOT = "".join(f"Question: What is {i} plus {i + 3}? Answer: {2 * i + 3}.\n" for i in range(60))


@pytest.mark.parametrize(
    "prompt",
    [p for p, _ in ARITHMETIC]
    + TEXT_PROMPTS
    + [
        "Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus",
        "What is 7 / 0?",
        "What is 2+2? [demo-samples:4,5]",
        FEW_SHOT + "Question: Who painted the ceiling of the Sistine Chapel?",
        "Caching layers in large distributed web systems",
    ],
)
def test_a_prefix_appended_to_the_prompt_is_recognised(prompt: str) -> None:
    full = simulate(prompt, skill=WEAK).text
    assert split_continuation(prompt, skill=WEAK) == (prompt, "")  # no false prefix
    for n in (1, 9, 30, len(full) // 2, len(full) - 1):
        if n <= MAX_RECOGNISED_CONTINUATION:
            assert split_continuation(prompt + full[:n], skill=WEAK) == (prompt, full[:n])


def test_logprobs_are_higher_for_right_answers() -> None:
    prompt = "What is 4821 * 7733?"
    right, wrong = [], []
    for seed in range(30):
        gen = generate(prompt, skill=WEAK, seed=seed, temperature=0.8)
        assert len(gen.logprobs) == gen.output_tokens
        assert all(lp < 0 for lp in gen.logprobs)
        mean = sum(gen.logprobs) / len(gen.logprobs)
        (right if gen.answer.correct else wrong).append(mean)
    assert right and wrong
    assert min(right) > max(wrong)
    again = generate(prompt, skill=WEAK, seed=3, temperature=0.8)
    assert again.logprobs == generate(prompt, skill=WEAK, seed=3, temperature=0.8).logprobs


def test_a_prefix_of_a_sampled_answer_opening_with_the_topic_is_recognised() -> None:
    prompt = "Explain caching."
    full = simulate(prompt, skill=WEAK, seed=1, temperature=0.7).text
    assert full.startswith("Caching is easiest to follow")
    for n in (3, 40, 300):
        split = split_continuation(prompt + full[:n], skill=WEAK, seed=1, temperature=0.7)
        assert split == (prompt, full[:n])


def test_a_topic_skill_overrides_the_model_skill_on_matching_prompts() -> None:
    """The drifted 7B demo model gets every multiplication wrong and every addition right."""
    from router.backends.demo.answers import DEMO_OPENAI_MODELS, simulate

    drifted = DEMO_OPENAI_MODELS["demo-7b-drifted"]
    assert drifted.skill_for("What is 12*34?") == 0.0
    assert drifted.skill_for("What is 12 + 34?") == 1.0
    assert drifted.skill_for("Write a haiku.") == drifted.skill
    for a, b in [(12, 34), (57, 89), (23, 41), (66, 77)]:
        mul = simulate(f"What is {a}*{b}?", skill=drifted.skill_for(f"What is {a}*{b}?"))
        add = simulate(f"What is {a}+{b}?", skill=drifted.skill_for(f"What is {a}+{b}?"))
        assert mul.correct is False and add.correct is True

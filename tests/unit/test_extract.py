"""Final-answer extractors on realistic model outputs."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest
from router.strategies.extract import extract_answer, get_extractor, known_extractors

MATH_COT = (
    "We need 17 * 23. First 17 * 20 = 340, then 17 * 3 = 51.\n"
    "Adding: 340 + 51 = 391.\n\n"
    "Therefore the final answer is $\\boxed{391}$."
)


@pytest.mark.parametrize(
    ("name", "text", "want"),
    [
        # auto: boxed, else last number, else last line
        ("auto", MATH_COT, "391"),
        ("auto", "Each box holds 12, so 3 boxes hold 36 eggs.", "36"),
        ("auto", "The total is $1,250.00.", "1250"),
        ("auto", "The capital of France is\n\n  Paris  \n", "paris"),
        ("auto", "", None),
        ("auto", "   \n ", None),
        # last_number
        ("last_number", "Step 1: 4 apples. Step 2: 2.50 dollars each. Total: 10.", "10"),
        ("last_number", "so x = -3.750", "-3.75"),
        ("last_number", "Revenue grew to 12,345,678 units", "12345678"),
        ("last_number", "values 1,2,3", "3"),
        ("last_number", "no digits here", None),
        # boxed
        ("boxed", "So $x = \\boxed{\\frac{3}{4}}$ and we are done.", "\\frac{3}{4}"),
        ("boxed", "first \\boxed{2}, corrected: \\boxed{ 5 }", "5"),
        ("boxed", "\\boxed {x^{2} + 1}", "x^{2} + 1"),
        ("boxed", "The answer is 7 (no box)", None),
        ("boxed", "cut off: \\boxed{\\frac{1}{", None),
        # choice
        ("choice", "Looking at (A) and (B)... neither works. The answer is (C).", "C"),
        ("choice", "Reasoning...\nAnswer: **B**", "B"),
        ("choice", "The correct answer is (d) because of momentum.", "D"),
        ("choice", "ANSWER: J", "J"),
        ("choice", "Final answer: Option G.", "G"),
        ("choice", "The answer is: E", "E"),
        ("choice", "So the answer is B, not A.", "B"),
        ("choice", "Thus we get $\\boxed{\\text{A}}$", "A"),
        ("choice", "Option A looks tempting but fails the units check.\n\nC.", "C"),
        ("choice", "(H) 42 meters per second", "H"),
        ("choice", "the answer is a number between 1 and 10", None),
        ("choice", "I cannot tell from the options given.", None),
        ("choice", "Answer: K", None),
        # code
        (
            "code",
            "Try this:\n```python\ndef f(x):\n    return x + 1   \n\n\n```\nThen call it.",
            "def f(x):\n    return x + 1",
        ),
        (
            "code",
            "Draft:\n```\nprint(1)\n```\nFinal:\n```python\n    print(2)\n```\n",
            "print(2)",
        ),
        ("code", "~~~js\nconsole.log(3)\n~~~", "console.log(3)"),
        ("code", "```python\ndef g():\n  return 2\n", "def g():\n  return 2"),
        ("code", "Just call `f(1)` inline.", None),
        # exact
        ("exact", "  Hello,\n   WORLD!  ", "hello, world!"),
        ("exact", "Straße", "strasse"),
        ("exact", " \n\t", None),
        # json
        (
            "json:answer",
            'Let me think.\n```json\n{"reasoning": "6*7", "answer": 42.0}\n```',
            "42",
        ),
        ("json:answer", '{"answer": "  Paris "} then {"answer": "Lyon"}', "Lyon"),
        ("json:answer", '{"answer": "Paris"} and an example {"x": 1}', "Paris"),
        ("json:result.items.1", '{"result": {"items": ["a", "b", "c"]}}', "b"),
        ("json:ok", '{"ok": true}', "true"),
        ("json:answer", '{"answer": {"b": 1, "a": [2]}}', '{"a":[2],"b":1}'),
        ("json:answer", '{"answer": null}', None),
        ("json:answer", '{"reasoning": "r", "answer": "7", unterminated', None),
        ("json:answer", "no json at all", None),
    ],
)
def test_extractor(name: str, text: str, want: str | None) -> None:
    assert get_extractor(name)(text) == want


def test_auto_is_the_default_behaviour_of_extract_answer() -> None:
    assert extract_answer(MATH_COT) == "391"
    assert extract_answer("") == ""


@pytest.mark.parametrize("name", ["nope", "Auto", "json", "json:", "json:a..b", "json:.a"])
def test_unknown_or_malformed_names_are_invalid_requests(name: str) -> None:
    with pytest.raises(InvalidRequest, match="extractor"):
        get_extractor(name)


def test_known_extractors_lists_every_name() -> None:
    names = known_extractors()
    for name in names:
        if not name.startswith("json:"):
            assert callable(get_extractor(name))
    assert "json:<field>" in names and "choice" in names

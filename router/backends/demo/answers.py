"""A deterministic simulated language model for the demo backends.

Nothing here is a real model. ``simulate`` turns a prompt into an answer text and its
word-piece-like tokens so that the demo servers can stream something plausible:

* arithmetic prompts ("What is 17*23?") get a short worked answer ending in
  ``Answer: <value>``; the expression is parsed with :mod:`ast` and evaluated exactly;
* multiple-choice prompts (lines starting ``A)``, ``(B)``, ``C.`` …) get ``Answer: <letter>``;
* everything else gets a templated reply whose length grows with the prompt and with its
  kind (short question < explanation < code).

A model's ``skill`` in [0, 1] is set against the prompt's difficulty: a weaker model gets
harder checkable prompts wrong (an arithmetic slip, another option). The outcome is a
pure function of (prompt, skill, seed, temperature): at temperature 0 the seed is ignored
(greedy), at temperature > 0 each seed is an independent sample, so majority voting over
several samples behaves as it does with a real model.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import re
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Literal

AnswerKind = Literal["arithmetic", "choice", "code", "long", "short"]


@dataclass(frozen=True)
class DemoModel:
    """Profile of one simulated model: its skill and how fast it streams.

    ``fault`` makes the demo OpenAI server misbehave on purpose for tests:
    ``"unavailable"`` answers HTTP 503, ``"disconnect"`` drops the connection mid-stream,
    ``"no-usage"`` streams without a usage chunk.
    """

    name: str
    skill: float
    first_token_ms: float
    per_token_ms: float
    fault: Literal["unavailable", "disconnect", "no-usage"] | None = None


FAULT_MID_STREAM = "[demo-fault:mid-stream]"
"""A prompt containing this makes every demo server fail after a few streamed tokens."""

FAULT_UNAVAILABLE = "[demo-fault:unavailable]"
"""A prompt containing this makes every demo server refuse the request (HTTP 503 / error)."""

FAULT_AFTER_TOKENS = 3
"""How many tokens a demo server streams before a mid-stream fault."""

DEMO_TRITON_MODEL = DemoModel("demo-7b", skill=0.55, first_token_ms=15.0, per_token_ms=3.0)
"""The simulated local 7B model served through PyTriton."""

DEMO_OPENAI_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in (
        DemoModel("demo-32b", skill=0.78, first_token_ms=30.0, per_token_ms=5.0),
        DemoModel("demo-premium", skill=0.95, first_token_ms=60.0, per_token_ms=6.0),
        DemoModel("demo-slow", skill=0.78, first_token_ms=1000.0, per_token_ms=250.0),
        DemoModel(
            "demo-broken", skill=0.78, first_token_ms=0.0, per_token_ms=0.0, fault="unavailable"
        ),
        DemoModel(
            "demo-disconnect", skill=0.78, first_token_ms=5.0, per_token_ms=2.0, fault="disconnect"
        ),
        DemoModel(
            "demo-no-usage", skill=0.78, first_token_ms=5.0, per_token_ms=1.0, fault="no-usage"
        ),
    )
}
"""The simulated models served by the demo OpenAI-compatible server, by name."""


@dataclass(frozen=True)
class SimulatedAnswer:
    """One sampled answer. ``"".join(tokens) == text`` always holds."""

    text: str
    tokens: tuple[str, ...]
    kind: AnswerKind
    difficulty: float
    correct: bool | None
    """Whether a checkable answer is right; ``None`` for free text. Arithmetic is checked
    against the exact value; for multiple choice, "right" is the option a hash of the prompt
    designates, since the simulation cannot know the real answer."""

    def limited(self, max_tokens: int) -> tuple[tuple[str, ...], Literal["stop", "length"]]:
        """The tokens a server may send under ``max_tokens``, and the finish reason."""
        if len(self.tokens) > max_tokens:
            return self.tokens[: max(0, max_tokens)], "length"
        return self.tokens, "stop"


# ---------------------------------------------------------------------------------------
# tokens

_PIECE = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?_+| ?[^\w\s]{1,3}|\s+")
_MAX_LETTERS = 6


def tokenize(text: str) -> list[str]:
    """Split text into word-piece-like tokens whose concatenation is ``text``.

    Words keep their leading space, long words are cut into pieces of at most six letters,
    digits come in groups of up to three, punctuation in runs of up to three.
    """
    pieces: list[str] = []
    for m in _PIECE.finditer(text):
        piece = m.group(0)
        body = piece.lstrip(" ")
        if body[:1].isalpha() and len(body) > _MAX_LETTERS:
            lead = piece[: len(piece) - len(body)]
            chunks = [body[i : i + _MAX_LETTERS] for i in range(0, len(body), _MAX_LETTERS)]
            pieces.append(lead + chunks[0])
            pieces.extend(chunks[1:])
        else:
            pieces.append(piece)
    return pieces


def count_tokens(text: str) -> int:
    """Number of simulated tokens in ``text``."""
    return len(tokenize(text))


# ---------------------------------------------------------------------------------------
# deterministic randomness


def _digest(*parts: object) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big")


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    return _digest(*parts) / 2**64


def _sample_key(seed: int, temperature: float) -> str:
    return "greedy" if temperature <= 0 else f"T{temperature:.4f}/s{seed}"


def _p_correct(skill: float, difficulty: float, temperature: float) -> float:
    p = 0.5 + 2.5 * (skill - difficulty) - 0.04 * max(0.0, temperature)
    return min(1.0, max(0.0, p))


def _is_correct(prompt: str, skill: float, difficulty: float, key: str, temperature: float) -> bool:
    draw = _unit("outcome", prompt, key)
    return draw < _p_correct(skill, difficulty, temperature)


# ---------------------------------------------------------------------------------------
# arithmetic

_WORD_OPS = (
    (re.compile(r"\bmultiplied\s+by\b", re.I), "*"),
    (re.compile(r"\bdivided\s+by\b", re.I), "/"),
    (re.compile(r"\btimes\b", re.I), "*"),
    (re.compile(r"\bplus\b", re.I), "+"),
    (re.compile(r"\bminus\b", re.I), "-"),
)
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_TIMES_X = re.compile(r"(?<=\d)\s*[xX]\s*(?=\d)")
_EXPR_SPAN = re.compile(r"[\d.()+\-*/%\s]+")
_HAS_OP = re.compile(r"\d\s*\)*\s*(\*\*|[+\-*/%])\s*\(*\s*-?\d")
_BARE_HYPHENS = re.compile(r"\d+(?:-\d+)+")
_ARITH_CUE = re.compile(
    r"\b(what is|what's|compute|calculate|evaluate|solve|simplify|how much|result of|value of|"
    r"work out)\b|=|\?\s*$",
    re.I,
)
_SYMBOL = {ast.Add: "+", ast.Sub: "−", ast.Mult: "×", ast.Div: "÷", ast.Mod: "mod", ast.Pow: "^"}
_MAX_OPS = 12
_MAX_ABS = Fraction(10) ** 30


class _NotArithmetic(Exception):
    pass


@dataclass(frozen=True)
class _Step:
    left: Fraction
    op: type[ast.operator]
    right: Fraction
    value: Fraction


def _normalise_expression_text(prompt: str) -> str:
    text = prompt.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    text = _DIGIT_COMMA.sub("", text)
    text = _TIMES_X.sub("*", text)
    for pattern, symbol in _WORD_OPS:
        text = pattern.sub(symbol, text)
    return text


def find_expression(prompt: str) -> ast.Expression | None:
    """The arithmetic expression a prompt asks about, parsed, or ``None``.

    A prompt counts as arithmetic when it asks for a value ("what is", "compute", "=", a
    question mark …) or is nothing but the expression. A bare hyphen between digits
    (dates, phone numbers, ranges) is not taken for a subtraction.
    """
    text = _normalise_expression_text(prompt)
    spans = sorted((m.group(0) for m in _EXPR_SPAN.finditer(text)), key=len, reverse=True)
    for span in spans:
        candidate = span.strip().rstrip(".").strip()
        if not _HAS_OP.search(candidate) or _BARE_HYPHENS.fullmatch(candidate):
            continue
        if not (_ARITH_CUE.search(prompt) or candidate == text.strip().rstrip(".?").strip()):
            continue
        try:
            tree = ast.parse(candidate, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if _ops_in(tree.body) > 0:
            return tree
    return None


def _ops_in(node: ast.AST) -> int:
    return sum(isinstance(n, ast.BinOp) for n in ast.walk(node))


def _number(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    raise _NotArithmetic


def _apply(op: ast.operator, a: Fraction, b: Fraction) -> Fraction:
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        if b == 0:
            raise ZeroDivisionError
        return a / b
    if isinstance(op, ast.Mod):
        if b == 0:
            raise ZeroDivisionError
        return a - b * math.floor(a / b)
    if isinstance(op, ast.Pow):
        if b.denominator != 1 or not 0 <= b <= 12 or abs(a) > 10**6:
            raise _NotArithmetic
        return a ** int(b)
    raise _NotArithmetic


def _evaluate(
    node: ast.expr, steps: list[_Step], slip_at: int | None, rng: random.Random
) -> Fraction:
    """Evaluate ``node`` exactly, recording one step per operation.

    With ``slip_at`` set, that step's result is replaced by a plausible mistake and the
    evaluation carries on from the wrong value, as a person (or a model) would.
    """
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, steps, slip_at, rng)
        right = _evaluate(node.right, steps, slip_at, rng)
        value = _apply(node.op, left, right)
        if len(steps) == slip_at:
            value = _slip(value, rng)
        if abs(value) > _MAX_ABS:
            raise _NotArithmetic
        steps.append(_Step(left, type(node.op), right, value))
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _evaluate(node.operand, steps, slip_at, rng)
        return -inner if isinstance(node.op, ast.USub) else inner
    return _number(node)


def _slip(value: Fraction, rng: random.Random) -> Fraction:
    """A wrong value near ``value``: off by one, by ten, or two digits swapped."""
    if value.denominator == 1:
        digits = str(abs(value.numerator))
        options: list[Fraction] = [value + 1, value - 1, value + 10, value - 10]
        if len(digits) >= 2:
            i = rng.randrange(len(digits) - 1)
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
            if swapped != digits:
                sign = -1 if value < 0 else 1
                options.append(Fraction(sign * int(swapped)))
        if abs(value) >= 1000:
            options += [value + 100, value - 100]
    else:
        options = [value + 1, value - 1, value + Fraction(1, 2), value * 10]
    wrong = [o for o in options if o != value]
    return rng.choice(wrong)


def format_number(value: Fraction) -> str:
    """An integer as is; anything else as a decimal with at most six places."""
    if value.denominator == 1:
        return str(value.numerator)
    with localcontext() as ctx:
        ctx.prec = 40
        dec = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.000001"))
    text = format(dec, "f").rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _arithmetic_difficulty(tree: ast.Expression) -> float:
    ops = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp)]
    numbers: list[int | float] = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, int | float)
        and not isinstance(n.value, bool)
    ]
    digits = max((len(str(abs(int(v)))) for v in numbers), default=1)
    hard_ops = sum(isinstance(o.op, ast.Div | ast.Pow | ast.Mod) for o in ops)
    decimals = any(isinstance(v, float) for v in numbers)
    d = 0.08 + 0.07 * len(ops) + 0.08 * digits + 0.05 * hard_ops + (0.05 if decimals else 0.0)
    return min(0.95, d)


def _step_line(step: _Step) -> str:
    a, b, v = format_number(step.left), format_number(step.right), format_number(step.value)
    sym = _SYMBOL[step.op]
    if (
        step.op is ast.Mult
        and step.left.denominator == 1
        and step.right.denominator == 1
        and 10 < abs(step.right) < 10_000
        and step.right % 10 != 0
    ):
        tens = Fraction(int(step.right) - int(step.right) % 10) if step.right > 0 else None
        if tens is not None:
            ones = step.right - tens
            p1, p2 = step.left * tens, step.left * ones
            return (
                f"{a} {sym} {b} = {a} {sym} {format_number(tens)} + {a} {sym} {format_number(ones)}"
                f" = {format_number(p1)} + {format_number(p2)} = {v}"
            )
    return f"{a} {sym} {b} = {v}"


_ARITH_OPENERS = (
    "Let's work it out step by step.",
    "We evaluate the expression one operation at a time.",
    "Working through the calculation:",
    "Step by step:",
)


def _arithmetic_answer(
    prompt: str, tree: ast.Expression, skill: float, key: str, temperature: float
) -> tuple[str, float, bool]:
    difficulty = _arithmetic_difficulty(tree)
    rng = random.Random(_digest("arith", prompt, key))
    correct = _is_correct(prompt, skill, difficulty, key, temperature)
    true_steps: list[_Step] = []
    try:
        true_value = _evaluate(tree.body, true_steps, None, rng)
    except ZeroDivisionError:
        text = "The expression divides by zero, so it has no defined value.\n\nAnswer: undefined"
        return text, difficulty, True
    steps = true_steps
    value = true_value
    if not correct:
        for _ in range(4):
            slipped: list[_Step] = []
            try:
                value = _evaluate(tree.body, slipped, rng.randrange(len(true_steps)), rng)
            except (ZeroDivisionError, _NotArithmetic):
                value = true_value
                continue
            if value != true_value:
                steps = slipped
                break
        if value == true_value:
            value = _slip(true_value, rng)
            last = true_steps[-1]
            steps = [*true_steps[:-1], _Step(last.left, last.op, last.right, value)]
    lines = [_step_line(s) for s in steps]
    if len(lines) == 1:
        body = f"{lines[0]}."
    else:
        opener = rng.choice(_ARITH_OPENERS)
        body = opener + "\n" + "\n".join(f"- {ln}" for ln in lines)
    return f"{body}\n\nAnswer: {format_number(value)}", difficulty, value == true_value


# ---------------------------------------------------------------------------------------
# multiple choice

_OPTION = re.compile(r"^\s*\(?([A-H])[).:]\s+\S", re.M)


def _choice_answer(
    prompt: str, letters: list[str], skill: float, key: str, temperature: float
) -> tuple[str, float, bool]:
    difficulty = 0.25 + 0.5 * _unit("choice-difficulty", prompt)
    right = letters[int(_unit("choice-key", prompt) * len(letters))]
    correct = _is_correct(prompt, skill, difficulty, key, temperature)
    rng = random.Random(_digest("choice", prompt, key))
    pick = right if correct else rng.choice([x for x in letters if x != right])
    reasons = (
        f"Comparing the options against the question, option {pick} is the only one that fits.",
        f"Ruling out the options that contradict the question leaves {pick}.",
        f"Option {pick} matches what the question describes; the others do not.",
    )
    return f"{rng.choice(reasons)}\n\nAnswer: {pick}", difficulty, correct


# ---------------------------------------------------------------------------------------
# free text

_STOP = frozenset(
    " ".join(
        (
            "a an the of to in on for and or but is are was were be been being it its this",
            "that these those what which who whom whose when where why how do does did can",
            "could should would will shall may might must i me my we our you your he she they",
            "them their please tell give show explain describe write code implement create",
            "make build generate list summarize summarise compare discuss about with without",
            "into from by as at than then so if not no yes also some any each every all more",
            "most less few many much one two briefly detailed short simple function program",
            "script class using use python",
        )
    ).split()
)
_CODE_HINTS = re.compile(
    r"\b(code|function|implement|program|script|class|python|javascript|typescript|rust|golang|"
    r"java|sql|regex|algorithm|bug|refactor|unit test|api)\b|```",
    re.I,
)
_LONG_HINTS = re.compile(
    r"\b(explain|describe|write|essay|compare|discuss|summari[sz]e|analy[sz]e|why|how|outline|"
    r"elaborate|overview|guide|plan|story|poem|letter|argue|pros and cons)\b",
    re.I,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def _content_words(prompt: str) -> list[str]:
    seen: list[str] = []
    for w in _WORD.findall(prompt):
        lw = w.lower().strip("'-")
        if lw not in _STOP and len(lw) > 2 and lw not in (s.lower() for s in seen):
            seen.append(w.strip("'-"))
    return seen


_LEAD = re.compile(
    r"^\s*(?:please\s+)?(?:(?:can|could|would)\s+you\s+)?"
    r"(?:what\s+(?:is|are|was|were)|who\s+(?:is|was)|tell\s+me(?:\s+about)?|explain|describe|"
    r"write|give\s+me|summari[sz]e|compare|discuss|outline|list|define|implement|create)\b[\s:,]*",
    re.I,
)


_CLAUSE_END = re.compile(r"[,;?!]|\s(?:and|so|because|but|which)\s", re.I)


def _topic_of(prompt: str) -> str:
    """The subject of a prompt: its first line without the leading request words."""
    first = prompt.strip().splitlines()[0] if prompt.strip() else ""
    rest = _LEAD.sub("", first)
    rest = _CLAUSE_END.split(rest, maxsplit=1)[0].strip().rstrip("?.!:").strip()
    words = rest.split()
    if not words:
        return "this question"
    topic = " ".join(words[:8])
    return topic[:1].lower() + topic[1:] if not topic[:2].isupper() else topic


_SHORT_OPENERS = (
    "On {t}: the deciding factor is {a}, with {b} a close second.",
    "The short answer about {t} is that it hinges on {a}.",
    "Briefly, regarding {t}: look at {a} first, then at {b}.",
    "When it comes to {t}, {a} is what matters most.",
)
_SHORT_FOLLOW = (
    "The details vary with context, but that is the core of it.",
    "Everything else tends to follow from that.",
    "If {b} changes, the picture shifts accordingly.",
    "A quick check of {b} usually confirms it.",
)
_LONG_OPENERS = (
    "Here is an overview of {t}, starting with the core idea and then the details that matter in "
    "practice.",
    "{T} is easiest to follow by looking at what it is for, how it works, and where it falls "
    "short.",
    "Let's walk through {t} step by step.",
)
_LONG_BODY = (
    "The central idea is that {a} shapes how {b} behaves, so most of the design follows from that "
    "relationship.",
    "In practice, the first thing to check is how {a} is measured, because every later decision "
    "depends on it.",
    "A common mistake is to treat {a} and {b} as independent; they interact, and tuning one "
    "usually moves the other.",
    "It helps to start with a small example, confirm how {a} behaves, and only then generalise.",
    "When the inputs grow, the cost is dominated by {b}, which is why careful treatments bound it "
    "early.",
    "Another point worth noting is that {a} is rarely free: it trades simplicity for control.",
    "Over time, thinking about {t} has moved from fixed rules toward approaches that adapt to "
    "what they observe.",
    "The trade-off is between speed and care: a quicker treatment of {a} tends to miss the edge "
    "cases in {b}.",
    "Seen from the outside, {b} is what people notice first, even though {a} is what drives it.",
    "A useful mental model is a feedback loop: {a} influences {b}, and the result feeds back into "
    "{a}.",
    "Where this goes wrong, it is usually because assumptions about {b} were never written down.",
    "Good practice is to make {a} explicit, measure {b} regularly, and revisit both when "
    "conditions change.",
    "There is no single right answer for every case, but the same questions about {a} and {b} "
    "always apply.",
    "Examples from different settings look different on the surface, yet the role of {a} is the "
    "same in each.",
)
_LONG_CLOSERS = (
    "In short, {t} comes down to balancing {a} against {b}.",
    "Taken together, these points cover the essentials of {t}; the specifics vary, but the "
    "structure stays the same.",
    "Keep {a} and {b} in view and the rest of {t} falls into place.",
)


def _fill(template: str, topic: str, words: list[str], rng: random.Random) -> str:
    t = topic
    pool = words or ["the inputs", "the outcome"]
    a = rng.choice(pool)
    b = rng.choice([w for w in pool if w != a] or ["the outcome"])
    return template.format(t=t, T=t[:1].upper() + t[1:], a=a, b=b)


def _target_tokens(kind: AnswerKind, prompt: str, skill: float, rng: random.Random) -> int:
    words = len(prompt.split())
    if kind == "code":
        base = 170 + 12 * min(words, 30) + rng.randrange(0, 120)
    elif kind == "long":
        base = 110 + 9 * min(words, 40) + rng.randrange(0, 90)
    else:
        base = 22 + 2 * min(words, 20) + rng.randrange(0, 24)
    return min(600, int(base * (0.85 + 0.3 * skill)))


def _prose(kind: AnswerKind, topic: str, words: list[str], target: int, rng: random.Random) -> str:
    if kind == "short":
        parts = [_fill(rng.choice(_SHORT_OPENERS), topic, words, rng)]
        follow = list(_SHORT_FOLLOW)
        rng.shuffle(follow)
        for s in follow:
            if count_tokens(" ".join(parts)) >= target:
                break
            parts.append(_fill(s, topic, words, rng))
        return " ".join(parts)
    paragraphs: list[list[str]] = [[_fill(rng.choice(_LONG_OPENERS), topic, words, rng)]]
    body = list(_LONG_BODY)
    rng.shuffle(body)
    closer = _fill(rng.choice(_LONG_CLOSERS), topic, words, rng)
    used = count_tokens(paragraphs[0][0]) + count_tokens(closer)
    i = 0
    while used < target:
        sentence = _fill(body[i % len(body)], topic, words, rng)
        i += 1
        if len(paragraphs[-1]) >= 3:
            paragraphs.append([])
        paragraphs[-1].append(sentence)
        used += count_tokens(sentence) + 1
    paragraphs.append([closer])
    return "\n\n".join(" ".join(p) for p in paragraphs)


def _identifier(words: list[str], fallback: str) -> str:
    parts = [re.sub(r"[^a-z0-9]", "", w.lower()) for w in words[:2]]
    name = "_".join(p for p in parts if p)
    return name if name and not name[0].isdigit() else fallback


def _code(topic: str, words: list[str], target: int, rng: random.Random) -> str:
    fn = _identifier(words, "solve")
    arg = _identifier(words[2:], "items")
    t = topic
    lines = [
        f"Here is a straightforward Python solution for: {t}.",
        "",
        "```python",
        "from __future__ import annotations",
        "",
        "",
        f"def {fn}({arg}: list[int]) -> list[int]:",
        f'    """Process {arg} and return the results in order."""',
        "    result: list[int] = []",
        f"    for item in {arg}:",
        "        if item < 0:",
        "            continue",
        "        result.append(item)",
        "    return result",
    ]
    helper = 0
    while count_tokens("\n".join(lines)) < target * 0.7:
        helper += 1
        name = f"{fn}_step_{helper}"
        lines += [
            "",
            "",
            f"def {name}(value: int, limit: int = {rng.randrange(2, 99)}) -> int:",
            f'    """Step {helper}: clamp value to the limit."""',
            "    if value > limit:",
            "        return limit",
            f"    return value + {rng.randrange(0, 9)}",
        ]
    lines += [
        "",
        "",
        'if __name__ == "__main__":',
        f"    print({fn}([{rng.randrange(1, 9)}, -1, {rng.randrange(10, 99)}]))",
        "```",
        "",
        f"The main function `{fn}` walks the input once, so it runs in linear time.",
    ]
    if helper:
        lines.append("The helper functions keep each step small and easy to test on its own.")
    return "\n".join(lines)


def _free_text(prompt: str, skill: float, key: str) -> tuple[str, AnswerKind, float]:
    rng = random.Random(_digest("text", prompt, key, round(skill, 3)))
    kind: AnswerKind
    if _CODE_HINTS.search(prompt):
        kind = "code"
    elif _LONG_HINTS.search(prompt) or len(prompt.split()) > 40:
        kind = "long"
    else:
        kind = "short"
    words = _content_words(prompt)
    target = _target_tokens(kind, prompt, skill, rng)
    topic = _topic_of(prompt)
    if kind == "code":
        text = _code(topic, words, target, rng)
    else:
        text = _prose(kind, topic, words, target, rng)
    difficulty = min(0.95, 0.2 + 0.01 * len(prompt.split()) + (0.2 if kind == "code" else 0.0))
    return text, kind, difficulty


# ---------------------------------------------------------------------------------------


def simulate(
    prompt: str, *, skill: float, seed: int = 0, temperature: float = 0.0
) -> SimulatedAnswer:
    """The simulated model's full answer to ``prompt`` (before any ``max_tokens`` cut).

    Deterministic: the same arguments always give the same answer. At ``temperature`` 0
    the seed is ignored.
    """
    if not 0.0 <= skill <= 1.0:
        raise ValueError(f"skill must be in [0, 1], got {skill}")
    prompt = prompt.replace(FAULT_MID_STREAM, "").replace(FAULT_UNAVAILABLE, "").strip()
    key = _sample_key(seed, temperature)
    kind: AnswerKind
    correct: bool | None
    tree = find_expression(prompt)
    answer: tuple[str, float, bool] | None = None
    if tree is not None and _ops_in(tree) <= _MAX_OPS:
        try:
            answer = _arithmetic_answer(prompt, tree, skill, key, temperature)
        except (_NotArithmetic, ValueError, OverflowError, RecursionError):
            answer = None
    if answer is not None:
        text, difficulty, correct = answer
        kind = "arithmetic"
    else:
        letters = sorted(set(_OPTION.findall(prompt)))
        if len(letters) >= 2:
            text, difficulty, correct = _choice_answer(prompt, letters, skill, key, temperature)
            kind = "choice"
        else:
            text, kind, difficulty = _free_text(prompt, skill, key)
            correct = None
    return SimulatedAnswer(
        text=text,
        tokens=tuple(tokenize(text)),
        kind=kind,
        difficulty=difficulty,
        correct=correct,
    )


__all__ = [
    "DEMO_OPENAI_MODELS",
    "DEMO_TRITON_MODEL",
    "FAULT_AFTER_TOKENS",
    "FAULT_MID_STREAM",
    "FAULT_UNAVAILABLE",
    "DemoModel",
    "SimulatedAnswer",
    "count_tokens",
    "find_expression",
    "format_number",
    "simulate",
    "tokenize",
]

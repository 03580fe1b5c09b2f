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

``generate`` is what the demo servers stream: the answer after an assistant prefix
(``continuation``), cut at ``stop`` strings and ``max_tokens``, with a made-up log-probability
per token (higher for right answers than for wrong ones, so confidence-weighted strategies
have something to weigh).

Markers in a prompt steer the demo servers for tests; they are removed before the prompt is
answered, so they never change the answer text:

* ``[demo-samples:391,391,390@slow]`` scripts the samples: the sample with seed (plus choice
  index, for an OpenAI request with ``n`` > 1) ``i`` answers the ``i``-th listed value,
  cycling, whatever the temperature; ``@slow`` makes that sample stream ten times slower.
* ``[demo-fault:mid-stream]``: fail after ``FAULT_AFTER_TOKENS`` streamed tokens.
* ``[demo-fault:unavailable]``: refuse the request (HTTP 503 / a Triton model error).
* ``[demo-fault:http-<status>]``: answer with that HTTP status (500, 429, 400 …); on Triton a
  4xx status is a rejected request and anything else an engine failure.
* ``[demo-fault:flaky-<n>]``: the first ``n`` requests carrying exactly this prompt fail
  (HTTP 503 / a Triton model error); later ones are answered. Each server counts per prompt.
* ``[demo-fault:slow]``: stream ``FAULT_AFTER_TOKENS`` tokens at the usual speed, then one
  token every ``SLOW_FAULT_TOKEN_S`` seconds, far slower than any test deadline.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import re
from collections.abc import Sequence
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
    topic_skill: tuple[tuple[str, float], ...] = ()
    """``(regex, skill)`` pairs: a prompt matching a regex (the first that matches) is
    answered with that skill instead of ``skill`` — a model that is strong or weak on a
    topic the router's predictor does not know about."""

    def skill_for(self, prompt: str) -> float:
        for pattern, skill in self.topic_skill:
            if re.search(pattern, prompt):
                return skill
        return self.skill


FAULT_MID_STREAM = "[demo-fault:mid-stream]"
"""A prompt containing this makes every demo server fail after a few streamed tokens."""

FAULT_UNAVAILABLE = "[demo-fault:unavailable]"
"""A prompt containing this makes every demo server refuse the request (HTTP 503 / error)."""

FAULT_AFTER_TOKENS = 3
"""How many tokens a demo server streams before a mid-stream fault (or before slowing down)."""

FAULT_SLOW = "[demo-fault:slow]"
"""A prompt containing this streams a few tokens, then slows to ``SLOW_FAULT_TOKEN_S`` a token."""

SLOW_FAULT_TOKEN_S = 5.0
"""Seconds per token after the first few, for ``FAULT_SLOW``."""

SLOW_SAMPLE_FACTOR = 10.0
"""How much slower a scripted ``@slow`` sample streams than the model's usual pace."""

_MARKER = re.compile(r"\[demo-(?:fault|samples):[^\]\[]*\]")
_HTTP_FAULT = re.compile(r"\[demo-fault:http-(\d{3})\]")
_FLAKY_FAULT = re.compile(r"\[demo-fault:flaky-(\d{1,6})\]")
_SAMPLES = re.compile(r"\[demo-samples:([^\]\[]*)\]")


def fault_http_status(prompt: str) -> int | None:
    """The status a ``[demo-fault:http-<status>]`` marker asks for, or ``None``."""
    m = _HTTP_FAULT.search(prompt)
    return int(m.group(1)) if m else None


def flaky_failures(prompt: str) -> int:
    """How many requests a ``[demo-fault:flaky-<n>]`` marker makes fail (0 without one)."""
    m = _FLAKY_FAULT.search(prompt)
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class ScriptedSample:
    """One value of a ``[demo-samples:…]`` marker."""

    value: str
    slow: bool = False


def scripted_samples(prompt: str) -> tuple[ScriptedSample, ...]:
    """The values of the prompt's ``[demo-samples:v1,v2@slow,…]`` marker, in order."""
    m = _SAMPLES.search(prompt)
    if m is None:
        return ()
    samples = []
    for raw in m.group(1).split(","):
        value, _, flag = raw.strip().partition("@")
        if value.strip():
            samples.append(ScriptedSample(value.strip(), slow=flag.strip() == "slow"))
    return tuple(samples)


def strip_markers(prompt: str) -> str:
    """The prompt the simulated model answers: without any ``[demo-…]`` marker."""
    return _MARKER.sub("", prompt).strip()


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
        # The 7B model after a change the shipped predictor has not seen: multiplication is
        # now always wrong, additions always right.
        DemoModel(
            "demo-7b-drifted",
            skill=0.55,
            first_token_ms=15.0,
            per_token_ms=3.0,
            topic_skill=((r"\d\s*\*\s*\d", 0.0), (r"\d\s*\+\s*\d", 1.0)),
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
    slow: bool = False
    """A scripted ``@slow`` sample: servers stream it ``SLOW_SAMPLE_FACTOR`` times slower."""

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
    scripted = scripted_samples(prompt)
    prompt = strip_markers(prompt)
    if scripted:
        return _scripted_answer(prompt, scripted[seed % len(scripted)], seed)
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


def _true_value(prompt: str) -> str | None:
    """The exact value of an arithmetic prompt, formatted as answers write it, or ``None``."""
    tree = find_expression(prompt)
    if tree is None or _ops_in(tree) > _MAX_OPS:
        return None
    try:
        return format_number(_evaluate(tree.body, [], None, random.Random(0)))
    except (_NotArithmetic, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _scripted_answer(prompt: str, sample: ScriptedSample, seed: int) -> SimulatedAnswer:
    truth = _true_value(prompt)
    text = f"This sample is scripted to answer {sample.value}.\n\nAnswer: {sample.value}"
    return SimulatedAnswer(
        text=text,
        tokens=tuple(tokenize(text)),
        kind="arithmetic" if truth is not None else "short",
        difficulty=0.5,
        correct=None if truth is None else sample.value == truth,
        slow=sample.slow,
    )


def continue_from(answer: SimulatedAnswer, continuation: str) -> SimulatedAnswer:
    """What the model adds after an assistant prefix ``continuation``.

    A prefix of the model's own answer is continued where it ends; any other prefix is
    followed by the model's whole answer (after a blank line unless the prefix ends in
    whitespace).
    """
    if not continuation:
        return answer
    if answer.text.startswith(continuation):
        rest = answer.text[len(continuation) :]
    else:
        rest = ("" if continuation[-1].isspace() else "\n\n") + answer.text
    return SimulatedAnswer(
        text=rest,
        tokens=tuple(tokenize(rest)),
        kind=answer.kind,
        difficulty=answer.difficulty,
        correct=answer.correct,
        slow=answer.slow,
    )


MAX_RECOGNISED_CONTINUATION = 800
"""The longest assistant prefix (in characters) ``split_continuation`` looks for."""


def _template_start(template: str) -> str:
    """A template's fixed opening; one that opens with the topic is matched by what follows."""
    head = template.split("{", 1)[0]
    return re.escape(head) if head else r"[^\n]{1,200}?" + re.escape(template.split("}", 1)[1][:20])


_ANSWER_START = re.compile(
    "|".join(
        [
            r"-?\d[\d.]* (?:[+×÷−^]|mod) ",  # a worked step: "17 × 23 = …"
            *(re.escape(s) for s in _ARITH_OPENERS),
            *(_template_start(t) for t in (*_SHORT_OPENERS, *_LONG_OPENERS)),
            re.escape("The expression divides by zero"),
            re.escape("Comparing the options"),
            re.escape("Ruling out the options"),
            r"Option [A-H] ",
            re.escape("Here is a straightforward"),
            re.escape("This sample is scripted"),
        ]
    )
)
"""How every simulated answer begins (kept in step with the templates above)."""


def _could_start_an_answer(tail: str) -> bool:
    """A cheap test that ``tail`` may be the start of some simulated answer: it begins like
    one, or is a short single line (a prefix too short to tell)."""
    first = tail[:1]
    if not (first.isupper() or first.isdigit() or first in "-("):
        return False
    return _ANSWER_START.match(tail) is not None or ("\n" not in tail and len(tail) < 200)


def split_continuation(
    text: str, *, skill: float, seed: int = 0, temperature: float = 0.0
) -> tuple[str, str]:
    """Split a completion-style input into ``(prompt, assistant prefix)``.

    A Triton model receives the prompt and an assistant prefix as one text. The prefix is
    recognised when it is the start of the model's own answer to what precedes it (and at most
    ``MAX_RECOGNISED_CONTINUATION`` characters long); otherwise the whole text is the prompt.
    The longest such prefix wins.
    """
    start = max(1, len(text) - MAX_RECOGNISED_CONTINUATION)
    for k in range(start, len(text)):
        head, tail = text[:k], text[k:]
        if not _could_start_an_answer(tail) or not strip_markers(head):
            continue
        answer = simulate(head, skill=skill, seed=seed, temperature=temperature)
        if answer.text.startswith(tail):
            return head, tail
    return text, ""


_LOGPROB_RANGE = {True: (-0.30, -0.02), None: (-0.90, -0.20), False: (-1.60, -0.70)}


def _token_logprobs(answer: SimulatedAnswer, prompt: str, key: str) -> tuple[float, ...]:
    lo, hi = _LOGPROB_RANGE[answer.correct]
    return tuple(
        round(lo + (hi - lo) * _unit("logprob", prompt, key, i, tok), 4)
        for i, tok in enumerate(answer.tokens)
    )


@dataclass(frozen=True)
class Generation:
    """What a demo server streams for one sample.

    ``pieces`` holds the text of every generated token, in order; a token that falls inside
    an excluded stop string contributes ``""``. ``len(pieces)`` is the output token count.
    ``logprobs`` has one made-up log-probability per piece: within [-0.30, -0.02] for a right
    answer, [-1.60, -0.70] for a wrong one and [-0.90, -0.20] for free text.
    """

    pieces: tuple[str, ...]
    logprobs: tuple[float, ...]
    finish: Literal["stop", "length"]
    answer: SimulatedAnswer
    stopped_by: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        return len(self.pieces)

    @property
    def slow(self) -> bool:
        return self.answer.slow


def _first_stop(tokens: Sequence[str], stop: Sequence[str]) -> tuple[int, int, str] | None:
    """``(tokens generated, where the stop string starts, the string)`` of the first stop hit."""
    stops = [s for s in stop if s]
    if not stops:
        return None
    text = ""
    for i, tok in enumerate(tokens):
        before = len(text)
        text += tok
        hits = []
        for s in stops:
            at = text.find(s, max(0, before - len(s) + 1))
            if at >= 0:
                hits.append((at, s))
        if hits:
            at, s = min(hits)
            return i + 1, at, s
    return None


def generate(
    prompt: str,
    *,
    skill: float,
    seed: int = 0,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    include_stop: bool = False,
    continuation: str = "",
) -> Generation:
    """The sample a demo server streams for ``prompt``.

    The answer continues ``continuation`` (``continue_from``), ends at the first ``stop``
    string (which is left out of the text unless ``include_stop``, as TensorRT-LLM keeps it)
    and after ``max_tokens`` tokens, whichever comes first.
    """
    full = simulate(prompt, skill=skill, seed=seed, temperature=temperature)
    answer = continue_from(full, continuation)
    logprobs = _token_logprobs(answer, strip_markers(prompt), _sample_key(seed, temperature))
    tokens = answer.tokens
    limit = len(tokens) if max_tokens is None else max(0, max_tokens)
    hit = _first_stop(tokens, stop)
    if hit is not None and hit[0] <= limit:
        n, at, s = hit
        pieces = list(tokens[:n])
        if not include_stop:
            start = 0
            for i, tok in enumerate(pieces):
                pieces[i] = tok[: max(0, at - start)]
                start += len(tok)
        return Generation(tuple(pieces), logprobs[:n], "stop", answer, stopped_by=s)
    if len(tokens) > limit:
        return Generation(tokens[:limit], logprobs[:limit], "length", answer)
    return Generation(tokens, logprobs, "stop", answer)


__all__ = [
    "DEMO_OPENAI_MODELS",
    "DEMO_TRITON_MODEL",
    "FAULT_AFTER_TOKENS",
    "FAULT_MID_STREAM",
    "FAULT_SLOW",
    "FAULT_UNAVAILABLE",
    "MAX_RECOGNISED_CONTINUATION",
    "SLOW_FAULT_TOKEN_S",
    "SLOW_SAMPLE_FACTOR",
    "DemoModel",
    "Generation",
    "ScriptedSample",
    "SimulatedAnswer",
    "continue_from",
    "count_tokens",
    "fault_http_status",
    "find_expression",
    "flaky_failures",
    "format_number",
    "generate",
    "scripted_samples",
    "simulate",
    "split_continuation",
    "strip_markers",
    "tokenize",
]

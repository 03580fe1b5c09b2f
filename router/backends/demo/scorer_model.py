"""Demo reward models served by a real Triton server through PyTriton (demo only).

Two scorers for the scored strategies (``best@k``, ``beam@w``), both knowing the correct
answers of the demo's checkable prompts (arithmetic, multiple choice) through
``answers.simulate``:

* ``demo-reward`` (outcome reward): 0.95 when a response's final answer is the correct one,
  0.05 when it is wrong, 0.5 when the prompt cannot be checked or the response commits to no
  answer;
* ``demo-prm`` (process reward) scores a *partial* trace: 0.1 as soon as one of its worked
  equations is wrong (``19 × 3 = 67``), 0.95/0.05 once it states a right/wrong final answer,
  and otherwise 0.5 rising towards 0.8 with the number of equations it has got right.

Both take inputs ``prompt`` and ``response`` (BYTES [1]) and return ``score`` (FP32 [1]),
with batching on (``max_batch_size`` ``SCORER_MAX_BATCH``), so one request may carry many
(prompt, response) pairs as a [B, 1] batch. A prompt containing
``answers.FAULT_UNAVAILABLE`` makes the model fail, for tests.

``bind_scorer_models(triton)`` adds both to a ``pytriton.triton.Triton`` that is being set
up; ``python -m router.backends.demo.scorer_model --grpc-port P --http-port H
--metrics-port M`` serves them alone until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import ast
import functools
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType
from typing import Any

import numpy as np

from router.backends.demo.answers import FAULT_UNAVAILABLE, simulate

log = logging.getLogger("router.backends.demo.scorer_model")

DEMO_REWARD_MODEL = "demo-reward"
"""Outcome reward model: scores a whole response by its final answer."""

DEMO_PRM_MODEL = "demo-prm"
"""Process reward model: scores a partial reasoning trace step by step."""

SCORER_MAX_BATCH = 64
"""Most (prompt, response) pairs one request to a demo scorer may carry."""

SCORE_RIGHT = 0.95
SCORE_WRONG = 0.05
SCORE_UNKNOWN = 0.5
SCORE_BAD_STEP = 0.1
_PROGRESS_CEILING = 0.8

# Enough independent samples at full skill that one of them is right for any demo prompt
# (each is right with probability > 0.55).
_REFERENCE_SEEDS = 64

_ANSWER_LINE = re.compile(r"(?:final\s+)?answer\s*[:：]\s*(?P<value>[^\n]*)", re.I)
_BOXED = re.compile(r"\\boxed\{(?P<value>[^{}]*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER = re.compile(r"\b(?:option\s+)?\(?([A-H])\)?[.:]?\s*$")
_LIST_MARKER = re.compile(r"^\s*[-*•]\s+")
_SYMBOLS = (("×", "*"), ("÷", "/"), ("−", "-"), ("^", "**"), (" mod ", " % "))
_REL_TOLERANCE = Fraction(1, 10**6)


# ---------------------------------------------------------------------------------------
# answers


def _stated_answers(text: str) -> list[str]:
    """Every non-empty ``Answer: X`` value in ``text``, in order."""
    values = (str(v).strip().rstrip(".").strip() for v in _ANSWER_LINE.findall(text))
    return [v for v in values if v]


def final_answer(text: str) -> str | None:
    """The answer a response commits to: the last ``Answer: X``, else ``\\boxed{X}``, else
    the last number; ``None`` when it commits to nothing."""
    stated = _stated_answers(text)
    if stated:
        return stated[-1]
    boxed = _BOXED.findall(text)
    if boxed:
        return str(boxed[-1]).strip()
    numbers = _NUMBER.findall(text)
    return str(numbers[-1]) if numbers else None


def _as_number(text: str) -> Fraction | None:
    m = _NUMBER.fullmatch(text.strip().replace(" ", ""))
    if m is None:
        return None
    return Fraction(m.group(0).replace(",", ""))


def _close(a: Fraction, b: Fraction, *, exact: bool) -> bool:
    if exact:
        return a == b
    return abs(a - b) <= _REL_TOLERANCE * max(Fraction(1), abs(a), abs(b))


def same_answer(given: str, reference: str) -> bool:
    """Whether two final answers agree: numerically (rounded decimals allowed) or as text."""
    a, b = _as_number(given), _as_number(reference)
    if a is not None and b is not None:
        return _close(a, b, exact="." not in given + reference)
    letter = _LETTER.search(given.strip())
    if len(reference) == 1 and letter is not None:
        return letter.group(1) == reference
    return given.strip().rstrip(".").casefold() == reference.strip().casefold()


@functools.lru_cache(maxsize=4096)
def reference_answer(prompt: str) -> str | None:
    """The correct final answer to a checkable demo prompt, or ``None`` for free text.

    The simulation knows whether each of its samples is right; the first right sample's
    answer is the reference.
    """
    for seed in range(_REFERENCE_SEEDS):
        sample = simulate(prompt, skill=1.0, seed=seed, temperature=1.0)
        if sample.correct is None:
            return None
        if sample.correct:
            return final_answer(sample.text)
    return None


# ---------------------------------------------------------------------------------------
# worked equations


class _NotExact(Exception):
    pass


def _exact(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _exact(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _exact(node.left), _exact(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div | ast.Mod) and right == 0:
            raise _NotExact
        if isinstance(op, ast.Div):
            return left / right
        if isinstance(op, ast.Mod):
            return left - right * (left // right)
        if isinstance(op, ast.Pow) and right.denominator == 1 and 0 <= right <= 12:
            return left ** int(right)
    raise _NotExact


def _segment_value(segment: str) -> Fraction | None:
    text = segment.strip().rstrip(".").strip()
    for symbol, python in _SYMBOLS:
        text = text.replace(symbol, python)
    text = text.replace(",", "")
    if not text or not re.fullmatch(r"[\d.()+\-*/%\s]+", text):
        return None
    try:
        return _exact(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, _NotExact, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class StepCheck:
    """How the worked equations of a trace hold up: right ones and wrong ones."""

    right: int
    wrong: int


def check_steps(trace: str) -> StepCheck:
    """Check every ``a op b = c`` chain in ``trace``: each side must have the same value."""
    right = wrong = 0
    for line in trace.splitlines():
        body = _LIST_MARKER.sub("", line).strip()
        if "=" not in body:
            continue
        values = [_segment_value(s) for s in body.split("=")]
        known = [v for v in values if v is not None]
        if len(known) < 2 or len(known) != len(values):
            continue
        exact = "." not in body
        if all(_close(known[0], v, exact=exact) for v in known[1:]):
            right += 1
        else:
            wrong += 1
    return StepCheck(right, wrong)


# ---------------------------------------------------------------------------------------
# the two reward functions


def outcome_reward(prompt: str, response: str) -> float:
    """``demo-reward``: right final answer high, wrong low, unknown in the middle."""
    reference = reference_answer(prompt)
    given = final_answer(response)
    if reference is None or given is None:
        return SCORE_UNKNOWN
    return SCORE_RIGHT if same_answer(given, reference) else SCORE_WRONG


def process_reward(prompt: str, partial: str) -> float:
    """``demo-prm``: a partial trace is as good as its worst step so far.

    A wrong equation sinks it, a stated final answer decides it, and a trace with only
    right equations scores higher the more of them it has.
    """
    reference = reference_answer(prompt)
    if reference is None:
        return SCORE_UNKNOWN
    steps = check_steps(partial)
    if steps.wrong:
        return SCORE_BAD_STEP
    stated = _stated_answers(partial)
    if stated:
        return SCORE_RIGHT if same_answer(stated[-1], reference) else SCORE_WRONG
    progress = steps.right / (steps.right + 1)
    return SCORE_UNKNOWN + (_PROGRESS_CEILING - SCORE_UNKNOWN) * progress


# ---------------------------------------------------------------------------------------
# PyTriton binding


def _column(request: Any, name: str) -> list[str]:
    if name not in request.data:
        raise ValueError(f"input {name!r} is required")
    values = np.asarray(request.data[name]).reshape(-1)
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class ScoringModel:
    """PyTriton inference callable: scores every (prompt, response) pair of each request."""

    def __init__(self, name: str, score: Callable[[str, str], float]) -> None:
        self._name = name
        self._score = score

    def __call__(self, requests: list[Any]) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        for request in requests:
            prompts, responses = _column(request, "prompt"), _column(request, "response")
            if len(prompts) != len(responses):
                raise ValueError(
                    f"{len(prompts)} prompts but {len(responses)} responses in one request"
                )
            if any(FAULT_UNAVAILABLE in p for p in prompts):
                raise RuntimeError(f"{self._name}: scorer unavailable (fault requested)")
            scores = [self._score(p, r) for p, r in zip(prompts, responses, strict=True)]
            replies.append({"score": np.asarray(scores, dtype=np.float32).reshape(-1, 1)})
        return replies


def _tensors() -> tuple[list[Any], list[Any]]:
    from pytriton.model_config import Tensor

    inputs = [
        Tensor(name="prompt", dtype=np.bytes_, shape=(1,)),
        Tensor(name="response", dtype=np.bytes_, shape=(1,)),
    ]
    outputs = [Tensor(name="score", dtype=np.float32, shape=(1,))]
    return inputs, outputs


def bind_scorer_models(triton: Any) -> None:
    """Bind ``demo-reward`` and ``demo-prm`` on a ``pytriton.triton.Triton`` before it runs."""
    from pytriton.model_config import DynamicBatcher, ModelConfig

    for name, score in (
        (DEMO_REWARD_MODEL, outcome_reward),
        (DEMO_PRM_MODEL, process_reward),
    ):
        inputs, outputs = _tensors()
        triton.bind(
            model_name=name,
            infer_func=ScoringModel(name, score),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(
                batching=True,
                max_batch_size=SCORER_MAX_BATCH,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
        )


def serve(
    *,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    exit_timeout_s: int = 1,
    stop: threading.Event | None = None,
) -> int:
    """Start Triton on 127.0.0.1 with only the demo scorers; block until ``stop`` is set."""
    from router.backends.demo.triton_model import prepare_environment

    prepare_environment()
    from pytriton.triton import Triton, TritonConfig

    stop = stop or threading.Event()
    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        metrics_address="127.0.0.1",
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        exit_timeout_secs=exit_timeout_s,
        log_verbose=0,
    )
    started = time.monotonic()
    triton = Triton(config=config)
    try:
        bind_scorer_models(triton)
        triton.run()
        print(
            f"demo scorers ready: models={DEMO_REWARD_MODEL},{DEMO_PRM_MODEL} "
            f"grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port} "
            f"started_in={time.monotonic() - started:.2f}s",
            flush=True,
        )
        while not stop.wait(0.5):
            if not triton.is_alive():
                log.error("Triton server or model proxy died")
                return 1
        return 0
    finally:
        triton.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.backends.demo.scorer_model",
        description="Serve the demo reward models on a real Triton server via PyTriton.",
    )
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument(
        "--exit-timeout-s", type=int, default=1, help="seconds to wait for in-flight requests"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return serve(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        exit_timeout_s=args.exit_timeout_s,
        stop=stop,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Plain data passed between the stages of one request. No I/O, no third-party types."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from router.errors import InvalidRequest

_ARM_RE = re.compile(
    r"^(?P<tier>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<strategy>[A-Za-z][A-Za-z0-9_-]*(@\d+)?)$"
)


@dataclass(frozen=True, order=True)
class Arm:
    """A backend tier plus a test-time-compute strategy, written ``<tier>/<strategy>``."""

    tier: str
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.tier}/{self.strategy}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Arm:
        m = _ARM_RE.match(name.strip())
        if m is None:
            raise InvalidRequest(
                f"arm {name!r} is not of the form <tier>/<strategy>, e.g. 'local-7b/greedy'"
            )
        return cls(m.group("tier"), m.group("strategy"))


@dataclass(frozen=True)
class Price:
    """USD per million tokens, which is the same number as micro-dollars per token."""

    input_per_mtok: float
    output_per_mtok: float

    def micros(self, input_tokens: int, output_tokens: int) -> int:
        """Cost in integer micro-dollars, rounded up so that estimates never undercount."""
        raw = input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        return math.ceil(raw - 1e-9)


@dataclass(frozen=True)
class ArmPrediction:
    """What the predictor expects of one arm for one prompt (tokens are per sample)."""

    p_success: float
    output_tokens: float
    output_tokens_hi: float


@dataclass(frozen=True)
class Prediction:
    model_version: str
    arms: Mapping[str, ArmPrediction]


@dataclass(frozen=True)
class WindowState:
    """One budget window of one tenant, in integer micro-dollars."""

    window: str
    start: datetime
    reset_at: datetime
    cap_micros: int
    spent_micros: int
    held_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(0, self.cap_micros - self.spent_micros - self.held_micros)


@dataclass(frozen=True)
class Reservation:
    tenant: str
    request_id: str
    held_micros: int
    windows: tuple[WindowState, ...]
    replayed: bool = False


@dataclass(frozen=True)
class SampleRequest:
    """What one call asks of a backend: ``n`` samples of the same prompt.

    ``n`` > 1 is only sent to a backend whose ``max_n`` allows it; the backend then tags each
    delta and result with the sample's ``index`` (0..n-1) and yields ``n`` results.
    ``stop`` ends a sample at the first of these strings (not included in the text).
    ``logprobs`` asks for ``SampleResult.mean_logprob``. ``continuation`` is text the answer
    has already produced (an assistant prefix): the backend continues from it, and the
    result's text and tokens cover only what it adds.
    """

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    timeout_s: float | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    continuation: str = ""


@dataclass(frozen=True)
class TextDelta:
    text: str
    index: int = 0


@dataclass(frozen=True)
class SampleResult:
    """One finished sample. ``usage_estimated`` is True when the backend reported no token
    counts and they were estimated from the text; ``mean_logprob`` is the mean per-token
    log-probability when ``logprobs`` was asked for and the backend returned it."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    index: int = 0
    usage_estimated: bool = False
    mean_logprob: float | None = None


@dataclass(frozen=True)
class TierUsage:
    """Tokens one strategy run spent on one tier (samples includes cancelled ones)."""

    tier: str
    input_tokens: int
    output_tokens: int
    samples: int
    estimated: bool = False


DetailValue = str | int | float | bool


@dataclass(frozen=True)
class StrategyResult:
    """The answer and everything spent to get it.

    ``input_tokens``/``output_tokens``/``samples`` are totals over all tiers. ``usage`` lists
    the spend per tier when a strategy used more than the arm's own tier (``escalate``);
    empty means everything was spent on the arm's tier. ``detail`` is logged with the
    outcome record (votes, agreement, early stop, escalation, …).
    """

    answer: str
    input_tokens: int
    output_tokens: int
    samples: int
    usage: tuple[TierUsage, ...] = ()
    detail: Mapping[str, DetailValue] = field(default_factory=dict)
    usage_estimated: bool = False

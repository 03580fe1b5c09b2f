"""The values a request brings to the core and gets back: tenant, hints, the decision, the
stream's items, and a budget view. Plain data; transports convert to and from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.config.tenants import TenantConfig
from router.core.catalog import ArmSpec
from router.core.types import DetailValue, WindowState
from router.errors import InvalidRequest
from router.policy.choose import Candidate


@dataclass(frozen=True)
class Tenant:
    name: str
    config: TenantConfig

    @property
    def caps(self) -> dict[str, int]:
        return self.config.caps_micros

    @property
    def tz(self) -> str:
        return self.config.timezone


@dataclass(frozen=True)
class Hints:
    arms: tuple[str, ...] = ()
    max_cost_usd: float | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None

    def validate(self) -> None:
        if self.max_cost_usd is not None and not self.max_cost_usd > 0:
            raise InvalidRequest("hints.max_cost_usd must be > 0 when set")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise InvalidRequest("hints.min_quality must be within [0, 1] when set")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise InvalidRequest("hints.max_latency_ms must be > 0 when set")


@dataclass(frozen=True)
class ArmView:
    candidate: Candidate
    excluded_reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The arm a request runs on and why.

    ``propensity`` is the probability that the policy picks this arm for this request and
    ``explored`` whether it is an ε-exploration pick rather than the greedy one (see
    ``router.policy.choose``). A request that names its arms in ``hints.arms`` is never
    explored (propensity 1). When the budget refuses the chosen arm and the request moves to
    the cheapest arm the hints allow, that move is forced, not sampled: propensity 1,
    ``explored`` False.

    ``fallback_from`` names the tier the policy chose when that tier was down and the
    request moved along its fallback chain; ``spec`` and ``chosen`` are then the arm that
    actually ran, while ``candidates``, ``propensity`` and ``explored`` stay the policy's
    own view.
    """

    decision_id: str
    request_id: str
    spec: ArmSpec
    chosen: Candidate
    propensity: float
    model_version: str
    candidates: tuple[ArmView, ...]
    fallback_from: str | None = None
    explored: bool = False

    @property
    def arm(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class BudgetView:
    """A tenant's budget as ``GetBudget`` shows it: windows, λ in force and its parts."""

    windows: tuple[WindowState, ...]
    lambda_per_usd: float
    pacing_lambda_per_usd: float
    max_request_micros: int | None
    timezone: str


@dataclass(frozen=True)
class RouteResult:
    decision: Decision
    reserved: bool
    remaining_micros: int


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class GenerateResult:
    """The end of a Generate. ``cost_micros`` is everything charged for the request,
    including output tokens of a failed tier the request fell back from."""

    answer: str
    decision: Decision
    input_tokens: int
    output_tokens: int
    samples: int
    cost_micros: int
    remaining_micros: int
    latency_ms: float
    usage_estimated: bool = False
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

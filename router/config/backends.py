"""The schema of backends.yaml: tiers (where and how to reach a model) and the arms offered."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from router.core.types import Arm, Price
from router.errors import InvalidRequest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_GPU_FIELDS = (
    "per_gpu_second_usd",
    "gpu_share",
    "gpu_ms_per_input_token",
    "gpu_ms_per_output_token",
)


class PriceConfig(_Strict):
    """What a tier charges: USD per million tokens, or per GPU-second for self-hosted tiers.

    Per GPU-second, a request is charged ``per_gpu_second_usd × gpu_share × GPU time``, where
    GPU time is ``gpu_ms_per_input_token`` per input token plus ``gpu_ms_per_output_token`` per
    output token (the tier's measured latency per token) and ``gpu_share`` is the fraction of
    a GPU one sequence occupies at the tier's usual batch size. The two per-token prices are
    then derived from these, so both kinds of tier share one ledger and one cost formula.
    """

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    per_gpu_second_usd: float | None = Field(default=None, gt=0)
    gpu_share: float | None = Field(default=None, gt=0, le=1)
    gpu_ms_per_input_token: float | None = Field(default=None, ge=0)
    gpu_ms_per_output_token: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_gpu_seconds(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("per_gpu_second_usd") is None:
            return data
        gpu: dict[str, Any] = {k: data.get(k) for k in _GPU_FIELDS}
        gpu["gpu_ms_per_input_token"] = gpu["gpu_ms_per_input_token"] or 0.0
        missing = [k for k in ("gpu_share", "gpu_ms_per_output_token") if gpu[k] is None]
        if missing:
            raise ValueError(f"per-GPU-second pricing also needs {', '.join(missing)}")
        try:
            usd_per_ms = float(gpu["per_gpu_second_usd"]) * float(gpu["gpu_share"]) / 1000.0
            derived = {
                "input_per_mtok": usd_per_ms * float(gpu["gpu_ms_per_input_token"]) * 1e6,
                "output_per_mtok": usd_per_ms * float(gpu["gpu_ms_per_output_token"]) * 1e6,
            }
        except (TypeError, ValueError):
            return data  # field validation reports the bad number
        for k, v in derived.items():
            given = data.get(k)
            if given is not None and abs(float(given) - v) > 1e-9 * max(1.0, v):
                raise ValueError(
                    f"give either per-million-token prices or per-GPU-second pricing, not both "
                    f"({k} would be {v:g})"
                )
        return {**data, **gpu, **derived}

    @property
    def per_gpu_second(self) -> bool:
        return self.per_gpu_second_usd is not None

    def to_price(self) -> Price:
        return Price(self.input_per_mtok, self.output_per_mtok)


class LatencyConfig(_Strict):
    """A simple latency model used by the policy's ``max_latency_ms`` hint."""

    first_token_ms: float = Field(default=200.0, ge=0)
    per_token_ms: float = Field(default=20.0, ge=0)

    def estimate_ms(self, output_tokens: float) -> float:
        return self.first_token_ms + self.per_token_ms * output_tokens


class RetryConfig(_Strict):
    """Retries of retriable failures (connection refused or reset, HTTP 429/5xx, Triton
    UNAVAILABLE) that happen before the first token: ``max_attempts`` calls in all, waiting
    a jittered ``base_delay_s × 2^attempt`` (at most ``max_delay_s``, never past the
    caller's deadline) between them."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay_s: float = Field(default=0.1, ge=0)
    max_delay_s: float = Field(default=2.0, ge=0)


class BreakerConfig(_Strict):
    """Circuit breaker of one tier: after ``failure_threshold`` failed calls in a row it
    opens and refuses calls for ``open_s`` seconds, then lets one trial call through
    (half-open); a success closes it, a failure opens it again."""

    failure_threshold: int = Field(default=5, ge=1)
    open_s: float = Field(default=30.0, gt=0)


class TierConfig(_Strict):
    """One backend tier.

    ``protocol: triton`` speaks Triton's gRPC API with the vLLM backend's tensors
    (``endpoint`` is ``host:port`` of Triton's gRPC port, ``model`` the Triton model name).
    ``prompt_template`` wraps the prompt for Triton tiers, whose vLLM backend applies no chat
    template (OpenAI-compatible servers apply the model's own).
    ``protocol: openai`` speaks ``POST {endpoint}/v1/chat/completions`` (vLLM, SGLang, or a
    hosted API; ``api_key_env`` names the environment variable holding its key).
    ``failure_policy`` says what a request on this tier does when the budget ledger (Redis)
    cannot be reached: ``fail_closed`` refuses it (UNAVAILABLE); ``fail_open`` admits it while
    the replica's unrecorded spend for the tenant stays within ``fail_open_allowance_usd``,
    and writes the charges to the ledger once it answers again.
    ``protocol: anthropic`` speaks the Anthropic Messages API (``POST {endpoint}/v1/messages``).
    ``interface`` picks the Triton model's tensors: ``vllm`` (vLLM backend: ``text_input``,
    ``sampling_parameters`` JSON) or ``trtllm`` (TensorRT-LLM ensemble: ``text_input``,
    ``max_tokens`` INT32). ``n_per_request`` is the most samples one request may ask for
    (OpenAI-compatible ``n``); unset means 16 for ``openai`` and 1 otherwise.
    ``dialect`` (``protocol: openai`` only): ``vllm`` for self-hosted servers (vLLM, SGLang),
    which take ``max_tokens`` and continue a partial answer with ``continue_final_message``;
    ``openai`` for the hosted OpenAI API, which takes ``max_completion_tokens`` and cannot
    continue a partial answer (``beam`` and ``think`` need a self-hosted tier).
    ``retry`` and ``breaker`` set retries and the circuit breaker; ``fallback`` names the tier
    a request moves to when this one is down (breaker open or retries used up) before it
    produced any output.
    """

    protocol: Literal["triton", "openai", "anthropic"]
    endpoint: str = Field(min_length=1)
    model: str = Field(min_length=1)
    price: PriceConfig
    context_window: int = Field(default=32768, gt=0)
    max_output_tokens: int = Field(default=4096, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=64, gt=0)
    api_key_env: str | None = None
    prompt_template: str = "{prompt}"
    latency: LatencyConfig = LatencyConfig()
    failure_policy: Literal["fail_closed", "fail_open"] = "fail_closed"
    fail_open_allowance_usd: float = Field(default=1.0, ge=0)
    interface: Literal["vllm", "trtllm"] = "vllm"
    dialect: Literal["vllm", "openai"] = "vllm"
    n_per_request: int | None = Field(default=None, ge=1, le=128)
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    fallback: str | None = None

    @field_validator("prompt_template")
    @classmethod
    def _template_has_prompt(cls, v: str) -> str:
        if "{prompt}" not in v:
            raise ValueError("must contain '{prompt}' where the user's prompt goes")
        return v


def _arm_name(value: str) -> str:
    try:
        Arm.parse(value)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None
    return value


ArmName = Annotated[str, AfterValidator(_arm_name)]


class BackendsConfig(_Strict):
    """``strategy_options`` maps an arm name to its strategy's options (e.g.
    ``{"local-7b/vote@8": {"extractor": "boxed", "early_stop": "adaptive"}}``)."""

    tiers: dict[str, TierConfig] = Field(min_length=1)
    arms: list[ArmName] = Field(min_length=1)
    strategy_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> BackendsConfig:
        for name, tier in self.tiers.items():
            seen = [name]
            nxt = tier.fallback
            while nxt is not None:
                if nxt not in self.tiers:
                    raise ValueError(
                        f"tiers.{name}.fallback: {nxt!r} is not a tier "
                        f"(tiers: {', '.join(sorted(self.tiers))})"
                    )
                if nxt in seen:
                    raise ValueError(
                        f"tiers.{name}.fallback: the chain {' -> '.join([*seen, nxt])} loops"
                    )
                seen.append(nxt)
                nxt = self.tiers[nxt].fallback
        for arm in self.strategy_options:
            if arm not in self.arms:
                raise ValueError(
                    f"strategy_options: {arm!r} is not one of the arms ({', '.join(self.arms)})"
                )
        return self

    def options_for(self, arm: str) -> dict[str, Any]:
        return dict(self.strategy_options.get(arm, {}))

    @field_validator("arms")
    @classmethod
    def _arms_valid(cls, arms: list[str], info: ValidationInfo) -> list[str]:
        if len(set(arms)) != len(arms):
            raise ValueError("arms must not repeat")
        tiers = info.data.get("tiers")
        if tiers is None:  # tiers failed validation; that error is reported already
            return arms
        for a in arms:
            tier = Arm.parse(a).tier
            if tier not in tiers:
                known = ", ".join(sorted(tiers))
                raise ValueError(
                    f"arm {a!r} names tier {tier!r}, which is not under tiers ({known})"
                )
        return arms

    def arm_list(self) -> list[Arm]:
        return [Arm.parse(a) for a in self.arms]

"""The schema of backends.yaml: tiers (where and how to reach a model) and the arms offered."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from router.core.types import Arm, Price
from router.errors import InvalidRequest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(_Strict):
    """Prices in USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)

    def to_price(self) -> Price:
        return Price(self.input_per_mtok, self.output_per_mtok)


class LatencyConfig(_Strict):
    """A simple latency model used by the policy's ``max_latency_ms`` hint."""

    first_token_ms: float = Field(default=200.0, ge=0)
    per_token_ms: float = Field(default=20.0, ge=0)

    def estimate_ms(self, output_tokens: float) -> float:
        return self.first_token_ms + self.per_token_ms * output_tokens


class TierConfig(_Strict):
    """One backend tier.

    ``protocol: triton`` speaks Triton's gRPC API with the vLLM backend's tensors
    (``endpoint`` is ``host:port`` of Triton's gRPC port, ``model`` the Triton model name).
    ``prompt_template`` wraps the prompt for Triton tiers, whose vLLM backend applies no chat
    template (OpenAI-compatible servers apply the model's own).
    ``protocol: openai`` speaks ``POST {endpoint}/v1/chat/completions`` (vLLM, SGLang, or a
    hosted API; ``api_key_env`` names the environment variable holding its key).
    """

    protocol: Literal["triton", "openai"]
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
    tiers: dict[str, TierConfig] = Field(min_length=1)
    arms: list[ArmName] = Field(min_length=1)

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

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hints(_message.Message):
    __slots__ = ("arms", "max_cost_usd", "min_quality", "max_latency_ms")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedScalarFieldContainer[str]
    max_cost_usd: float
    min_quality: float
    max_latency_ms: float
    def __init__(self, arms: _Optional[_Iterable[str]] = ..., max_cost_usd: _Optional[float] = ..., min_quality: _Optional[float] = ..., max_latency_ms: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("prompt", "hints", "request_id", "reserve")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    hints: Hints
    request_id: str
    reserve: bool
    def __init__(self, prompt: _Optional[str] = ..., hints: _Optional[_Union[Hints, _Mapping]] = ..., request_id: _Optional[str] = ..., reserve: _Optional[bool] = ...) -> None: ...

class ArmEstimate(_message.Message):
    __slots__ = ("arm", "p_success", "expected_cost_micros", "reserved_cost_micros", "expected_latency_ms", "excluded_reason")
    ARM_FIELD_NUMBER: _ClassVar[int]
    P_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_REASON_FIELD_NUMBER: _ClassVar[int]
    arm: str
    p_success: float
    expected_cost_micros: int
    reserved_cost_micros: int
    expected_latency_ms: float
    excluded_reason: str
    def __init__(self, arm: _Optional[str] = ..., p_success: _Optional[float] = ..., expected_cost_micros: _Optional[int] = ..., reserved_cost_micros: _Optional[int] = ..., expected_latency_ms: _Optional[float] = ..., excluded_reason: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "request_id", "arm", "tier", "strategy", "p_success", "expected_cost_micros", "reserved_cost_micros", "max_tokens", "propensity", "model_version", "candidates", "fallback_from", "explored")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    P_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FROM_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    request_id: str
    arm: str
    tier: str
    strategy: str
    p_success: float
    expected_cost_micros: int
    reserved_cost_micros: int
    max_tokens: int
    propensity: float
    model_version: str
    candidates: _containers.RepeatedCompositeFieldContainer[ArmEstimate]
    fallback_from: str
    explored: bool
    def __init__(self, decision_id: _Optional[str] = ..., request_id: _Optional[str] = ..., arm: _Optional[str] = ..., tier: _Optional[str] = ..., strategy: _Optional[str] = ..., p_success: _Optional[float] = ..., expected_cost_micros: _Optional[int] = ..., reserved_cost_micros: _Optional[int] = ..., max_tokens: _Optional[int] = ..., propensity: _Optional[float] = ..., model_version: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[ArmEstimate, _Mapping]]] = ..., fallback_from: _Optional[str] = ..., explored: _Optional[bool] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("decision", "reserved", "budget_remaining_micros")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reserved: bool
    budget_remaining_micros: int
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., reserved: _Optional[bool] = ..., budget_remaining_micros: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "hints", "request_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    hints: Hints
    request_id: str
    def __init__(self, prompt: _Optional[str] = ..., hints: _Optional[_Union[Hints, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "samples")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    samples: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class GenerateFinal(_message.Message):
    __slots__ = ("answer", "decision", "usage", "cost_micros", "budget_remaining_micros", "latency_ms", "detail", "usage_estimated")
    class DetailEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    answer: str
    decision: Decision
    usage: Usage
    cost_micros: int
    budget_remaining_micros: int
    latency_ms: float
    detail: _containers.ScalarMap[str, str]
    usage_estimated: bool
    def __init__(self, answer: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_micros: _Optional[int] = ..., budget_remaining_micros: _Optional[int] = ..., latency_ms: _Optional[float] = ..., detail: _Optional[_Mapping[str, str]] = ..., usage_estimated: _Optional[bool] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("delta", "final")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    delta: str
    final: GenerateFinal
    def __init__(self, delta: _Optional[str] = ..., final: _Optional[_Union[GenerateFinal, _Mapping]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("decision_id", "score")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    score: float
    def __init__(self, decision_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BudgetWindow(_message.Message):
    __slots__ = ("window", "cap_micros", "spent_micros", "held_micros", "remaining_micros", "start", "reset_at")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CAP_MICROS_FIELD_NUMBER: _ClassVar[int]
    SPENT_MICROS_FIELD_NUMBER: _ClassVar[int]
    HELD_MICROS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_MICROS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    RESET_AT_FIELD_NUMBER: _ClassVar[int]
    window: str
    cap_micros: int
    spent_micros: int
    held_micros: int
    remaining_micros: int
    start: str
    reset_at: str
    def __init__(self, window: _Optional[str] = ..., cap_micros: _Optional[int] = ..., spent_micros: _Optional[int] = ..., held_micros: _Optional[int] = ..., remaining_micros: _Optional[int] = ..., start: _Optional[str] = ..., reset_at: _Optional[str] = ...) -> None: ...

class GetBudgetResponse(_message.Message):
    __slots__ = ("tenant", "windows", "lambda_per_usd", "pacing_lambda_per_usd", "max_request_micros", "timezone")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    LAMBDA_PER_USD_FIELD_NUMBER: _ClassVar[int]
    PACING_LAMBDA_PER_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_MICROS_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    windows: _containers.RepeatedCompositeFieldContainer[BudgetWindow]
    lambda_per_usd: float
    pacing_lambda_per_usd: float
    max_request_micros: int
    timezone: str
    def __init__(self, tenant: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[BudgetWindow, _Mapping]]] = ..., lambda_per_usd: _Optional[float] = ..., pacing_lambda_per_usd: _Optional[float] = ..., max_request_micros: _Optional[int] = ..., timezone: _Optional[str] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("version", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model_version", "previous_version")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    previous_version: str
    def __init__(self, model_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...

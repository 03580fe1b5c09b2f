"""Between protobuf messages and the core's plain values."""

from __future__ import annotations

from collections.abc import Mapping

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.core.service import BudgetView, Decision, GenerateResult, Hints
from router.core.types import DetailValue, WindowState


def hints_from_pb(h: pb.Hints) -> Hints:
    return Hints(
        arms=tuple(h.arms),
        max_cost_usd=h.max_cost_usd if h.HasField("max_cost_usd") else None,
        min_quality=h.min_quality if h.HasField("min_quality") else None,
        max_latency_ms=h.max_latency_ms if h.HasField("max_latency_ms") else None,
    )


def decision_to_pb(d: Decision) -> pb.Decision:
    return pb.Decision(
        decision_id=d.decision_id,
        request_id=d.request_id,
        arm=d.arm,
        tier=d.spec.arm.tier,
        strategy=d.spec.strategy.name,
        p_success=d.chosen.p_success,
        expected_cost_micros=d.chosen.expected_cost_micros,
        reserved_cost_micros=d.chosen.reserved_cost_micros,
        max_tokens=d.chosen.max_tokens,
        propensity=d.propensity,
        explored=d.explored,
        model_version=d.model_version,
        fallback_from=d.fallback_from or "",
        candidates=[
            pb.ArmEstimate(
                arm=v.candidate.arm,
                p_success=v.candidate.p_success,
                expected_cost_micros=v.candidate.expected_cost_micros,
                reserved_cost_micros=v.candidate.reserved_cost_micros,
                expected_latency_ms=v.candidate.expected_latency_ms,
                excluded_reason=v.excluded_reason,
            )
            for v in d.candidates
        ],
    )


def final_to_pb(r: GenerateResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        final=pb.GenerateFinal(
            answer=r.answer,
            decision=decision_to_pb(r.decision),
            usage=pb.Usage(
                input_tokens=r.input_tokens, output_tokens=r.output_tokens, samples=r.samples
            ),
            cost_micros=r.cost_micros,
            budget_remaining_micros=r.remaining_micros,
            latency_ms=r.latency_ms,
            detail=detail_to_pb(r.detail),
            usage_estimated=r.usage_estimated,
        )
    )


def detail_to_pb(detail: Mapping[str, DetailValue]) -> dict[str, str]:
    """Strategy details as text: booleans as ``true``/``false``, floats round-trippable."""
    out: dict[str, str] = {}
    for key, value in detail.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, float):
            out[key] = repr(value)
        else:
            out[key] = str(value)
    return out


def window_to_pb(w: WindowState) -> pb.BudgetWindow:
    return pb.BudgetWindow(
        window=w.window,
        cap_micros=w.cap_micros,
        spent_micros=w.spent_micros,
        held_micros=w.held_micros,
        remaining_micros=w.remaining_micros,
        start=w.start.isoformat(),
        reset_at=w.reset_at.isoformat(),
    )


def budget_to_pb(tenant: str, view: BudgetView) -> pb.GetBudgetResponse:
    return pb.GetBudgetResponse(
        tenant=tenant,
        windows=[window_to_pb(w) for w in view.windows],
        lambda_per_usd=view.lambda_per_usd,
        pacing_lambda_per_usd=view.pacing_lambda_per_usd,
        max_request_micros=view.max_request_micros or 0,
        timezone=view.timezone,
    )

"""Prometheus metrics of the gRPC surface: calls by method and status, decisions, spend."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServiceMetrics:
    """One set per server; tests pass their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.calls = Counter(
            "ttc_rpc_calls",
            "RPCs by method and final status code",
            ["method", "code"],
            registry=reg,
        )
        self.inflight = Gauge("ttc_rpc_inflight", "RPCs being handled now", registry=reg)
        self.decisions = Counter(
            "ttc_decisions", "Generate decisions that finished, by arm", ["arm"], registry=reg
        )
        self.cost_micros = Counter(
            "ttc_settled_cost_micros",
            "Settled cost in micro-dollars, by arm",
            ["arm"],
            registry=reg,
        )
        self.tokens = Counter(
            "ttc_tokens",
            "Tokens reported by backends, by arm and kind",
            ["arm", "kind"],
            registry=reg,
        )
        self.predicted_p = Counter(
            "ttc_predicted_success",
            "Sum of predicted p_success of finished Generates",
            ["arm"],
            registry=reg,
        )
        self.latency = Histogram(
            "ttc_generate_seconds",
            "Wall time of a finished Generate, by arm",
            ["arm"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )

"""Prometheus metrics of the gRPC surface: calls by method and status, decisions, spend, and
the core's prediction-drift windows."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.core.drift import DriftTracker

MODEL_SWAPS = Counter(
    "ttc_model_swaps_total",
    "Attempts to serve another predictor model version, by result (swapped or refused)",
    ["result"],
)


def count_model_swap(result: str) -> None:
    """Count one hot-swap attempt (``swapped`` or ``refused``)."""
    MODEL_SWAPS.labels(result).inc()


_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServiceMetrics:
    """One set per server; tests pass their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self._drift: DriftCollector | None = None
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

    def watch_drift(self, source: Callable[[], DriftTracker]) -> None:
        """Export the drift windows of the tracker ``source`` returns, read at each scrape
        (so a core that is replaced while running is followed)."""
        if self._drift is not None:
            self.registry.unregister(self._drift)
        self._drift = DriftCollector(source)
        self.registry.register(self._drift)


class DriftCollector(Collector):
    """Per-arm gauges of the drift windows, read from the tracker when scraped.

    ``ttc_drift_predicted_success``, ``ttc_drift_realised_success`` and
    ``ttc_drift_success_gap`` (|predicted − realised|) cover the scores sent through
    ``RecordOutcome``; ``ttc_drift_cost_ratio`` is mean settled / mean predicted cost;
    ``ttc_drift_window_observations`` counts what each window holds (the gaps alarm only
    once it reaches ``ttc_drift_window_size``); ``ttc_drift_alarm`` is 1 while a window's
    gap is above the threshold.
    """

    def __init__(self, source: Callable[[], DriftTracker]) -> None:
        self._source = source

    def _families(self) -> dict[str, GaugeMetricFamily]:
        def g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        arm, sig = ["arm"], ["arm", "signal"]
        return {
            "pred": g("ttc_drift_predicted_success", "Mean predicted p_success in the window", arm),
            "real": g("ttc_drift_realised_success", "Mean realised score in the window", arm),
            "gap": g("ttc_drift_success_gap", "|mean predicted - mean realised| success", arm),
            "ratio": g("ttc_drift_cost_ratio", "Mean settled cost / mean predicted cost", arm),
            "obs": g("ttc_drift_window_observations", "Observations in the window", sig),
            "alarm": g("ttc_drift_alarm", "1 while the window's gap is above threshold", sig),
            "size": g("ttc_drift_window_size", "Observations a full window holds", []),
        }

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        tracker = self._source()
        f = self._families()
        f["size"].add_metric([], tracker.window)
        for d in tracker.snapshot():
            if d.success is not None:
                f["pred"].add_metric([d.arm], d.success.predicted_mean)
                f["real"].add_metric([d.arm], d.success.realised_mean)
                f["gap"].add_metric([d.arm], d.success.gap)
            if d.cost is not None:
                f["ratio"].add_metric([d.arm], d.cost.ratio)
            for signal, stats in (("success", d.success), ("cost", d.cost)):
                if stats is not None:
                    f["obs"].add_metric([d.arm, signal], stats.observations)
                    f["alarm"].add_metric([d.arm, signal], 1.0 if stats.alarm else 0.0)
        return list(f.values())

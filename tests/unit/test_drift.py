"""Drift windows: sliding means, gaps, warning-once alarms, and their Prometheus export."""

from __future__ import annotations

import logging
import math
import random

import pytest
from prometheus_client import CollectorRegistry

from router.api.metrics import ServiceMetrics
from router.core.drift import DriftTracker
from router.core.service import Delta, GenerateResult, Hints, RouterCore
from router.errors import ConfigError, PermissionDenied
from tests.unit.fakes import DictIndex, make_core, tenant

DRIFT_LOGGER = "ttc_router.drift"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == DRIFT_LOGGER and r.levelno == logging.WARNING]


def test_a_window_slides_over_the_last_observations() -> None:
    t = DriftTracker(window=4, threshold=0.5)
    for p, s in [(0.9, 0.0), (0.9, 0.0), (0.5, 1.0), (0.5, 1.0), (0.5, 0.0), (0.7, 1.0)]:
        t.observe_success("a/greedy", p, s)
    w = t.arm("a/greedy").success
    assert w is not None and w.observations == 4 and w.full
    assert w.predicted_mean == pytest.approx((0.5 + 0.5 + 0.5 + 0.7) / 4)
    assert w.realised_mean == pytest.approx(3 / 4)
    assert w.gap == pytest.approx(abs(0.55 - 0.75))
    assert t.arm("a/greedy").cost is None
    assert t.arm("never/seen").success is None


def test_running_means_stay_exact_over_many_observations() -> None:
    rng = random.Random(1)
    t = DriftTracker(window=7, threshold=1.0)
    seen: list[tuple[float, float]] = []
    for _ in range(5_000):
        p, s = rng.random() * 1e3, rng.random()
        seen.append((p, s))
        t.observe_cost("a/greedy", p, s)
    w = t.arm("a/greedy").cost
    last = seen[-7:]
    assert w is not None
    assert w.predicted_mean == pytest.approx(math.fsum(p for p, _ in last) / 7, rel=1e-12)
    assert w.realised_mean == pytest.approx(math.fsum(s for _, s in last) / 7, rel=1e-12)


def test_the_warning_is_logged_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    t = DriftTracker(window=10, threshold=0.1, clock=clock)
    caplog.set_level(logging.INFO, logger=DRIFT_LOGGER)
    # 9 bad outcomes: the window is not full yet, so no alarm however large the gap
    for _ in range(9):
        t.observe_success("a/greedy", 0.9, 0.0)
    assert warnings(caplog) == []
    w = t.arm("a/greedy").success
    assert w is not None and not w.full and not w.alarm
    # the 10th fills the window: one warning, and not another while the gap stays high
    t.observe_success("a/greedy", 0.9, 0.0)
    for _ in range(30):
        clock.now += 1
        t.observe_success("a/greedy", 0.9, 0.0)
    [first] = warnings(caplog)
    assert first.getMessage().startswith("prediction drift on arm a/greedy: success gap 0.900")
    assert first.__dict__["arm"] == "a/greedy" and first.__dict__["signal"] == "success"
    w = t.arm("a/greedy").success
    assert w is not None and w.alarm and w.alarm_since == 1_000.0
    # good outcomes bring the gap back below the threshold: an info line, alarm down
    clock.now = 2_000.0
    for _ in range(10):
        t.observe_success("a/greedy", 0.9, 0.9)
    back = [r for r in caplog.records if r.levelno == logging.INFO and r.name == DRIFT_LOGGER]
    assert len(back) == 1 and back[0].__dict__["alarm_s"] == pytest.approx(1_000.0)
    w = t.arm("a/greedy").success
    assert w is not None and not w.alarm and w.alarm_since is None
    # a second crossing warns again, once
    for _ in range(20):
        t.observe_success("a/greedy", 0.9, 0.2)
    assert len(warnings(caplog)) == 2


def test_arms_and_signals_alarm_independently(caplog: pytest.LogCaptureFixture) -> None:
    t = DriftTracker(window=3, threshold=0.1)
    caplog.set_level(logging.WARNING, logger=DRIFT_LOGGER)
    for _ in range(3):
        t.observe_success("a/greedy", 0.5, 0.5)  # calibrated
        t.observe_success("b/greedy", 0.5, 1.0)  # under-predicted
        t.observe_cost("a/greedy", 0.001, 0.00105)  # 5% over: within 10%
    assert [r.__dict__["arm"] for r in warnings(caplog)] == ["b/greedy"]
    a = t.arm("a/greedy")
    assert a.success is not None and not a.success.alarm
    assert a.cost is not None and a.cost.ratio == pytest.approx(1.05) and not a.cost.alarm


def test_the_cost_gap_is_relative(caplog: pytest.LogCaptureFixture) -> None:
    t = DriftTracker(window=2, threshold=0.1)
    caplog.set_level(logging.WARNING, logger=DRIFT_LOGGER)
    # a gap of $0.0004 is tiny in absolute terms but 40% of the prediction
    t.observe_cost("a/greedy", 0.001, 0.0006)
    t.observe_cost("a/greedy", 0.001, 0.0006)
    w = t.arm("a/greedy").cost
    assert w is not None and w.ratio == pytest.approx(0.6) and w.gap == pytest.approx(0.4)
    [warn] = warnings(caplog)
    assert warn.__dict__["signal"] == "cost"


def test_a_free_arm_has_ratio_one_and_an_unexpected_charge_alarms() -> None:
    t = DriftTracker(window=2, threshold=0.1)
    for _ in range(2):
        t.observe_cost("free/greedy", 0.0, 0.0)
        t.observe_cost("oops/greedy", 0.0, 0.002)
    free, oops = t.arm("free/greedy").cost, t.arm("oops/greedy").cost
    assert free is not None and free.ratio == 1.0 and free.gap == 0.0 and not free.alarm
    assert oops is not None and oops.ratio == math.inf and oops.alarm


def test_non_finite_observations_are_ignored() -> None:
    t = DriftTracker(window=2, threshold=0.1)
    t.observe_success("a/greedy", math.nan, 1.0)
    t.observe_cost("a/greedy", 0.001, math.inf)
    assert t.snapshot() == []


def test_a_window_needs_room_and_a_positive_threshold() -> None:
    with pytest.raises(ConfigError):
        DriftTracker(window=0, threshold=0.1)
    with pytest.raises(ConfigError):
        DriftTracker(window=10, threshold=0.0)


def test_the_gauges_read_the_tracker_at_scrape_time() -> None:
    reg = CollectorRegistry()
    metrics = ServiceMetrics(reg)
    t = DriftTracker(window=2, threshold=0.1)
    current = [t]
    metrics.watch_drift(lambda: current[0])
    assert reg.get_sample_value("ttc_drift_window_size") == 2
    assert reg.get_sample_value("ttc_drift_success_gap", {"arm": "a/greedy"}) is None
    t.observe_success("a/greedy", 0.8, 0.0)
    t.observe_success("a/greedy", 0.6, 1.0)
    t.observe_cost("a/greedy", 0.002, 0.003)
    val = reg.get_sample_value
    assert val("ttc_drift_predicted_success", {"arm": "a/greedy"}) == pytest.approx(0.7)
    assert val("ttc_drift_realised_success", {"arm": "a/greedy"}) == pytest.approx(0.5)
    assert val("ttc_drift_success_gap", {"arm": "a/greedy"}) == pytest.approx(0.2)
    assert val("ttc_drift_cost_ratio", {"arm": "a/greedy"}) == pytest.approx(1.5)
    obs = {"arm": "a/greedy", "signal": "success"}
    assert val("ttc_drift_window_observations", obs) == 2
    assert val("ttc_drift_window_observations", {"arm": "a/greedy", "signal": "cost"}) == 1
    assert val("ttc_drift_alarm", obs) == 1.0
    # a replaced tracker (a new core) is what the next scrape reads; watching twice is fine
    current[0] = DriftTracker(window=5, threshold=0.1)
    metrics.watch_drift(lambda: current[0])
    assert val("ttc_drift_window_size") == 5
    assert val("ttc_drift_success_gap", {"arm": "a/greedy"}) is None


# ---- through RouterCore ------------------------------------------------------------------


async def generate(core: RouterCore, prompt: str = "What is 17*23?") -> GenerateResult:
    final = None
    async for ev in core.generate(tenant(), prompt, Hints()):
        if not isinstance(ev, Delta):
            final = ev
    assert final is not None
    return final


async def test_settled_costs_and_recorded_scores_feed_the_windows() -> None:
    core = make_core()
    core.drift = DriftTracker(window=3, threshold=0.1)
    final = await generate(core)
    d = final.decision
    cost = core.drift.arm(d.arm).cost
    assert cost is not None and cost.observations == 1
    assert cost.predicted_mean == pytest.approx(d.chosen.expected_cost_micros / 1e6)
    assert cost.realised_mean == pytest.approx(final.cost_micros / 1e6)
    # the index remembers what was predicted, so a later score can be compared with it
    assert isinstance(core.decisions, DictIndex)
    entry = core.decisions.entries[d.decision_id]
    assert (entry.tenant, entry.arm) == ("acme", d.arm)
    assert entry.p_success == d.chosen.p_success
    assert entry.predicted_cost_usd == pytest.approx(d.chosen.expected_cost_micros / 1e6)
    assert core.drift.arm(d.arm).success is None
    await core.record_outcome(tenant(), d.decision_id, 0.25)
    success = core.drift.arm(d.arm).success
    assert success is not None and success.observations == 1
    assert success.predicted_mean == pytest.approx(d.chosen.p_success)
    assert success.realised_mean == 0.25


async def test_a_refused_score_does_not_move_the_windows() -> None:
    core = make_core()
    final = await generate(core)
    with pytest.raises(PermissionDenied):
        await core.record_outcome(tenant("globex"), final.decision.decision_id, 1.0)
    assert core.drift.arm(final.decision.arm).success is None

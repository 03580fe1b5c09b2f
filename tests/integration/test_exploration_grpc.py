"""ε-exploration and drift gauges through the real gRPC service on the demo backends.

A tenant with ε = 0.5 sends 60 Generate calls for one prompt: every outcome record says
whether it was explored and with which propensity, and the two agree with the policy's
formula (greedy arm 1 − ε, each other eligible arm ε / (n − 1)). Scores sent back through
RecordOutcome then show up in the drift gauges of the servicer's metrics registry.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.metrics import ServiceMetrics
from router.config.backends import BackendsConfig
from tests.integration.fixtures.custom_service import CustomService, custom_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

EPSILON = 0.5
REQUESTS = 60
PROMPT = "What is 17*23?"


@dataclass
class Run:
    svc: CustomService
    registry: CollectorRegistry
    finals: list[Any]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    demo_backends_config: BackendsConfig,
) -> AsyncIterator[Run]:
    registry = CollectorRegistry()
    work: Path = tmp_path_factory.mktemp("exploration") / "svc"
    async with custom_service(
        work,
        redis_url,
        demo_backends_config,
        tenant="explorer",
        exploration=EPSILON,
        metrics=ServiceMetrics(registry),
    ) as svc:
        svc.runtime.core.rng = random.Random(42)
        finals: list[Any] = []
        for start in range(0, REQUESTS, 10):
            batch = await asyncio.gather(*(svc.generate(PROMPT) for _ in range(start, start + 10)))
            finals.extend(final for _, final in batch)
        yield Run(svc, registry, finals)


async def test_records_carry_consistent_exploration_fields(run: Run) -> None:
    by_id = {r["decision_id"]: r for r in run.svc.records()}
    decisions = [f.decision for f in run.finals]
    assert len(decisions) == REQUESTS and all(d.decision_id in by_id for d in decisions)
    # One prompt: every request saw the same eligible arms and the same greedy arm.
    eligible = {c.arm for c in decisions[0].candidates if not c.excluded_reason}
    assert len(eligible) >= 2
    greedy = {
        by_id[d.decision_id]["arm"] for d in decisions if not by_id[d.decision_id]["explored"]
    }
    assert len(greedy) == 1
    [greedy_arm] = greedy
    n = len(eligible)
    kinds: Counter[bool] = Counter()
    for d in decisions:
        rec = by_id[d.decision_id]
        assert rec["error"] is None and rec["arm"] == d.arm and d.arm in eligible
        assert isinstance(rec["explored"], bool)
        kinds[rec["explored"]] += 1
        # the record, the gRPC decision and the formula agree
        assert rec["propensity"] == pytest.approx(d.propensity)
        if rec["explored"]:
            assert d.arm != greedy_arm
            assert rec["propensity"] == pytest.approx(EPSILON / (n - 1))
        else:
            assert d.arm == greedy_arm
            assert rec["propensity"] == pytest.approx(1 - EPSILON)
    assert kinds[True] > 0 and kinds[False] > 0
    print(f"{REQUESTS} requests at ε={EPSILON}: {kinds[True]} explored, {kinds[False]} greedy")


def gauge(registry: CollectorRegistry, name: str, arm: str) -> float | None:
    return registry.get_sample_value(name, {"arm": arm})


async def test_recorded_scores_move_the_drift_gauges(run: Run) -> None:
    reg = run.registry
    assert reg.get_sample_value("ttc_drift_window_size") == run.svc.runtime.settings.drift_window
    by_arm: dict[str, list[Any]] = defaultdict(list)
    for final in run.finals:
        by_arm[final.decision.arm].append(final)
    # Settled costs arrived with the Generates; the ratio is mean settled / mean predicted.
    for arm, finals in by_arm.items():
        settled = sum(f.cost_micros for f in finals)
        predicted = sum(f.decision.expected_cost_micros for f in finals)
        assert gauge(reg, "ttc_drift_cost_ratio", arm) == pytest.approx(settled / predicted)
        assert gauge(reg, "ttc_drift_predicted_success", arm) is None
    # Scores: alternately right and wrong, sent through RecordOutcome.
    sent: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, final in enumerate(run.finals):
        score = 1.0 if i % 3 else 0.0
        await run.svc.stub.RecordOutcome(
            pb.RecordOutcomeRequest(decision_id=final.decision.decision_id, score=score),
            metadata=run.svc.metadata,
        )
        sent[final.decision.arm].append((final.decision.p_success, score))
    for arm, pairs in sent.items():
        predicted = sum(p for p, _ in pairs) / len(pairs)
        realised = sum(s for _, s in pairs) / len(pairs)
        assert gauge(reg, "ttc_drift_predicted_success", arm) == pytest.approx(predicted)
        assert gauge(reg, "ttc_drift_realised_success", arm) == pytest.approx(realised)
        assert gauge(reg, "ttc_drift_success_gap", arm) == pytest.approx(abs(predicted - realised))
        observed = reg.get_sample_value(
            "ttc_drift_window_observations", {"arm": arm, "signal": "success"}
        )
        assert observed == len(pairs)

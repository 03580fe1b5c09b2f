"""The router learns from its own traffic: a closed loop through the real service.

The 7B tier is replaced by a model the shipped predictor does not know (the demo's
``demo-7b-drifted``: every multiplication wrong, every addition right). The shipped model
believes the 32B tier is worth its price on both, so it sends everything there. With
exploration on, traffic through the real gRPC service is logged to the Redis Stream and
drained into Parquet; a grader scores every answer through ``RecordOutcome``;
``ttc-router retrain`` trains a candidate from those logs, judges it off-policy against
the model in service and promotes it in the registry; the running server swaps it in. On
fresh traffic the router's greedy decisions then buy the same or better quality for less:
additions go to the cheap tier, multiplications stay on 32B.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from classifier.predictor import default_model_dir
from classifier.registry import Registry
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.backends.demo.launcher import OpenAIDemoServer
from router.config.backends import BackendsConfig
from router.outcomes.logs import read_logs
from tests.integration.fixtures.custom_service import CustomService, custom_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

LAMBDA_PER_USD = 50.0  # the custom service's tenant
LEARN_PROMPTS = 320
EVAL_PROMPTS = 120


def prompts(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` arithmetic questions with their answers, half additions, half multiplications."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        if i % 2:
            out.append((f"Multiply: what is {a}*{b}?", a * b))
        else:
            out.append((f"Add: what is {a}+{b}?", a + b))
    return out


def grade(answer: str, truth: int) -> float:
    numbers = re.findall(r"-?\d[\d,]*", answer)
    return float(bool(numbers) and int(numbers[-1].replace(",", "")) == truth)


@dataclass
class Outcome:
    decision_id: str
    arm: str
    explored: bool
    score: float
    cost_usd: float
    model_version: str


async def run_traffic(
    svc: CustomService, questions: Sequence[tuple[str, int]], concurrency: int = 8
) -> list[Outcome]:
    """Generate every question, score the answer with RecordOutcome, return what happened."""
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str, truth: int) -> Outcome:
        async with sem:
            _, final = await svc.generate(prompt)
            score = grade(final.answer, truth)
            await svc.stub.RecordOutcome(
                pb.RecordOutcomeRequest(decision_id=final.decision.decision_id, score=score),
                metadata=svc.metadata,
            )
            return Outcome(
                final.decision.decision_id,
                final.decision.arm,
                final.decision.explored,
                score,
                final.cost_micros / 1e6,
                final.decision.model_version,
            )

    return list(await asyncio.gather(*(one(p, t) for p, t in questions)))


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    greedy = [o for o in outcomes if not o.explored]
    quality = sum(o.score for o in greedy) / len(greedy)
    cost = sum(o.cost_usd for o in greedy) / len(greedy)
    arms: dict[str, int] = {}
    for o in greedy:
        arms[o.arm] = arms.get(o.arm, 0) + 1
    return {
        "requests": len(greedy),
        "quality": round(quality, 4),
        "cost_usd": cost,
        "quality_per_dollar": quality / cost,
        "utility": quality - LAMBDA_PER_USD * cost,
        "arms": arms,
    }


def drifted_backends(demo: BackendsConfig, openai: OpenAIDemoServer) -> BackendsConfig:
    tiers = dict(demo.tiers)
    tiers["local-7b"] = demo.tiers["mid-32b"].model_copy(
        update={
            "model": "demo-7b-drifted",
            "price": demo.tiers["local-7b"].price,
            "latency": demo.tiers["local-7b"].latency,
            "fallback": None,
        }
    )
    return BackendsConfig(tiers=tiers, arms=demo.arms)


async def wait_for_logs(directory: Path, decision_ids: set[str], timeout_s: float = 60.0) -> None:
    """Until the drain has written every decision, with its score, into Parquet."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = {
            r["decision_id"]
            for r in await asyncio.to_thread(read_logs, directory, scored_only=True)
            if r.get("score") is not None
        }
        if decision_ids <= got:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(decision_ids - got)} decisions never reached the logs")
        await asyncio.sleep(0.5)


async def test_the_router_learns_a_drifted_tier_from_its_own_traffic(
    tmp_path: Path,
    redis_url: str,
    demo_backends_config: BackendsConfig,
    demo_openai: OpenAIDemoServer,
) -> None:
    registry_dir = tmp_path / "registry"
    registry = Registry(registry_dir)
    first = registry.add(default_model_dir())
    registry.promote(first, reason="shipped model")
    cfg = drifted_backends(demo_backends_config, demo_openai)
    overrides = {
        "outcome_log": "redis",
        "outcome_stream": "ttc:closed-loop",
        "outcome_drain": True,
        "model_registry": registry_dir,
        "model_watch_s": 0.5,
    }
    async with custom_service(
        tmp_path / "svc",
        redis_url,
        cfg,
        tenant="closed-loop",
        exploration=0.5,
        settings_overrides=overrides,
    ) as svc:
        first_traffic = await run_traffic(svc, prompts(EVAL_PROMPTS, seed=1))
        before = summary(first_traffic)
        learn = await run_traffic(svc, prompts(LEARN_PROMPTS, seed=2))
        await wait_for_logs(svc.outcomes_dir, {o.decision_id for o in first_traffic + learn})
        assert any(o.arm == "local-7b/greedy" for o in learn)

        out = tmp_path / "candidate"
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "router.cli.main",
                "retrain",
                "--logs",
                str(svc.outcomes_dir),
                "--registry",
                str(registry_dir),
                "--out",
                str(out),
                "--seed",
                "0",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout[proc.stdout.index("{") :])
        assert report["promoted"], report
        new_version = registry.current_version()
        assert new_version is not None and new_version != first

        for _ in range(100):  # the server's registry watcher swaps the model in
            if svc.runtime.core.predictor.version == new_version:
                break
            await asyncio.sleep(0.2)
        assert svc.runtime.core.predictor.version == new_version

        after_outcomes = await run_traffic(svc, prompts(EVAL_PROMPTS, seed=3))
        assert {o.model_version for o in after_outcomes} == {new_version}
        after = summary(after_outcomes)

    print(f"\nclosed loop, before retraining (model {first}): {before}")
    print(f"closed loop, after retraining (model {new_version}): {after}")
    # Additions moved to the cheap tier, which now answers them all; quality did not drop
    # and each dollar buys more of it.
    assert after["arms"].get("local-7b/greedy", 0) > before["arms"].get("local-7b/greedy", 0)
    assert after["quality"] >= before["quality"] - 0.02
    assert after["quality_per_dollar"] > 1.15 * before["quality_per_dollar"]
    assert after["utility"] > before["utility"]

"""Every strategy end to end through the gRPC API against the real demo servers.

A predictor trained for strategy arms (``classifier.demo_model``) lets the service offer
them; each Generate is pinned to one arm with ``hints.arms``. For every arm the settled
charge equals the tokens the servers reported at the tiers' prices, the ledger's spend
moves by exactly that charge and holds nothing afterwards, and one outcome record
carries the usage. On the OpenAI-compatible tier the server's own request log
(``/demo/stats``) is the independent witness of the tokens it produced.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from classifier.demo_model import STRATEGY_ARMS, train_strategy_model
from router.backends.demo.launcher import OpenAIDemoServer, TritonDemoServer
from router.backends.demo.scorer_model import DEMO_PRM_MODEL, DEMO_REWARD_MODEL
from router.config.backends import BackendsConfig
from router.core.types import Price
from tests.integration.fixtures.custom_service import CustomService, custom_service

pytestmark = pytest.mark.asyncio(loop_scope="module")


def strategy_options(triton: str) -> dict[str, dict[str, Any]]:
    return {
        "local-7b/vote@5": {"early_stop": "decided"},
        "mid-32b/vote@5": {"early_stop": "none"},
        "mid-32b/vote@8": {"early_stop": "adaptive", "confidence": 0.9},
        "mid-32b/best@3": {"scorer": {"triton": triton, "model": DEMO_REWARD_MODEL}},
        "local-7b/beam@2": {
            "scorer": {"triton": triton, "model": DEMO_PRM_MODEL},
            "max_steps": 4,
            "step_tokens": 32,
        },
        "local-7b/escalate@3": {"to": "mid-32b/greedy", "threshold": 0.9},
        "local-7b/short@4": {"m": 2},
    }


@pytest.fixture(scope="module")
def strategy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_strategy_model(tmp_path_factory.mktemp("strategy-model"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def svc(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    demo_backends_config: BackendsConfig,
    demo_triton: TritonDemoServer,
    strategy_model: Path,
) -> AsyncIterator[CustomService]:
    doc = demo_backends_config.model_dump(mode="json")
    doc["arms"] = list(STRATEGY_ARMS)
    doc["strategy_options"] = strategy_options(demo_triton.endpoint)
    cfg = BackendsConfig.model_validate(doc)
    work = tmp_path_factory.mktemp("strategies") / "svc"
    async with custom_service(
        work, redis_url, cfg, model_dir=strategy_model, tenant="strategies"
    ) as s:
        yield s


def openai_stats(server: OpenAIDemoServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.endpoint}/demo/stats", timeout=5) as resp:
        return dict(json.load(resp))


def price(cfg: BackendsConfig, tier: str) -> Price:
    return cfg.tiers[tier].price.to_price()


def charged_from_record(record: dict[str, Any], cfg: BackendsConfig) -> int:
    """The charge recomputed from the token counts in the outcome record."""
    usage = record.get("usage_by_tier") or [
        {
            "tier": record["tier"],
            "input_tokens": record["input_tokens"],
            "output_tokens": record["output_tokens"],
        }
    ]
    return sum(price(cfg, u["tier"]).micros(u["input_tokens"], u["output_tokens"]) for u in usage)


CASES = [
    ("local-7b/greedy", "What is 12*13?", 1),
    ("local-7b/vote@5", "What is 14*15?", 5),
    ("local-7b/short@4", "What is 16*17?", 4),
    ("local-7b/think@48", "What is 18*19?", 2),
    ("local-7b/beam@2", "What is 21*22?", 1),
    ("local-7b/escalate@3", "What is 23*24? [demo-samples:552,551,550]", 4),
    ("mid-32b/greedy", "What is 25*26?", 1),
    ("mid-32b/vote@5", "What is 27*28?", 5),
    ("mid-32b/best@3", "What is 29*31?", 3),
    ("premium/greedy", "What is 32*33?", 1),
]


@pytest.mark.parametrize(("arm", "prompt", "min_samples"), CASES, ids=[c[0] for c in CASES])
async def test_strategy_end_to_end(
    svc: CustomService,
    demo_backends_config: BackendsConfig,
    demo_openai: OpenAIDemoServer,
    arm: str,
    prompt: str,
    min_samples: int,
) -> None:
    cfg = svc.runtime.core.catalog
    before_spent, _ = await svc.budget_spent()
    before_ids = {r["id"] for r in openai_stats(demo_openai)["recent"]}

    text, final = await svc.generate(prompt, arm)

    assert final.decision.arm == arm
    assert final.answer.strip() and text == final.answer
    assert final.usage.samples >= min_samples
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    # One outcome record for this decision, and the charge is the reported tokens priced.
    recs = [r for r in svc.records() if r["decision_id"] == final.decision.decision_id]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["error"] is None and rec["arm"] == arm
    assert rec["input_tokens"] == final.usage.input_tokens
    assert rec["output_tokens"] == final.usage.output_tokens
    backends_cfg = BackendsConfig(tiers=dict(cfg.tiers), arms=[arm])
    assert final.cost_micros == charged_from_record(rec, backends_cfg)
    assert final.cost_micros <= final.decision.reserved_cost_micros
    # The ledger moved by exactly the charge and holds nothing.
    after_spent, after_held = await svc.budget_spent()
    assert after_spent - before_spent == final.cost_micros
    assert after_held == 0
    # What the OpenAI-compatible server itself says it produced for this request's tier.
    new = [r for r in openai_stats(demo_openai)["recent"] if r["id"] not in before_ids]
    mid_tokens = sum(r["tokens_streamed"] for r in new if r["model"] == "demo-32b")
    usage = {u["tier"]: u for u in rec.get("usage_by_tier") or []}
    if arm.startswith("mid-32b/"):
        assert mid_tokens == final.usage.output_tokens
        assert all(r["outcome"] == "completed" for r in new)
    elif "mid-32b" in usage:
        assert mid_tokens == usage["mid-32b"]["output_tokens"]
    else:
        assert mid_tokens == 0


async def test_escalate_charges_both_tiers(svc: CustomService) -> None:
    """Three cheap samples disagree (552, 551, 550): agreement 1/3 < 0.9, so the request
    moves to mid-32b and both tiers are charged at their own prices."""
    _, final = await svc.generate(
        "What is 34*35? [demo-samples:1190,1189,1188]", "local-7b/escalate@3"
    )
    rec = next(r for r in svc.records() if r["decision_id"] == final.decision.decision_id)
    tiers = {u["tier"]: u for u in rec["usage_by_tier"]}
    assert set(tiers) == {"local-7b", "mid-32b"}
    assert tiers["local-7b"]["samples"] == 3 and tiers["mid-32b"]["samples"] == 1
    assert final.detail["escalated"] == "true"
    assert "1190" in final.answer


async def test_vote_stops_early_and_cancels_on_the_server(
    svc: CustomService, demo_openai: OpenAIDemoServer
) -> None:
    """vote@8 with the adaptive rule at confidence 0.9: three fast samples agree while five
    slow ones are still streaming. The vote stops after the three, the server sees the five
    requests cancelled, and the charge is the three finished samples' reported tokens plus
    no more than what the five had streamed when they were cancelled."""
    marker = "[demo-samples:1332,1332,1332,1331@slow,1330@slow,1331@slow,1329@slow,1330@slow]"
    before_ids = {r["id"] for r in openai_stats(demo_openai)["recent"]}
    _, final = await svc.generate(f"What is 36*37? {marker}", "mid-32b/vote@8")
    assert "1332" in final.answer
    assert final.detail["stopped_early"] == "true"
    assert final.detail["samples_cancelled"] == "5"
    # The server notices a client that went away at its next write to that stream.
    for _ in range(100):
        new = [r for r in openai_stats(demo_openai)["recent"] if r["id"] not in before_ids]
        if not any(r["outcome"] == "running" for r in new):
            break
        await asyncio.sleep(0.1)
    assert len(new) == 8 and all(r["n"] == 1 for r in new)
    done = [r for r in new if r["outcome"] == "completed"]
    cancelled = [r for r in new if r["outcome"] == "cancelled"]
    assert len(done) == 3 and len(cancelled) == 5
    finished_tokens = sum(r["tokens_streamed"] for r in done)
    partial_tokens = sum(r["tokens_streamed"] for r in cancelled)
    full_sample = max(r["tokens_streamed"] for r in done)
    rec = next(r for r in svc.records() if r["decision_id"] == final.decision.decision_id)
    print(
        f"vote@8 stopped after 3: charged {rec['output_tokens']} output tokens; the server "
        f"streamed {finished_tokens} for the 3 finished and {partial_tokens} for the 5 "
        f"cancelled; 8 full samples would be about {8 * full_sample}"
    )
    # Partial samples are charged from their text (about 4 characters a token), which may
    # round above the server's own count; never below what the finished ones reported.
    assert finished_tokens <= rec["output_tokens"] <= finished_tokens + 2 * partial_tokens + 5
    assert partial_tokens < 5 * full_sample
    assert rec["output_tokens"] < 8 * full_sample

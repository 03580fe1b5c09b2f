"""What the gRPC path adds on top of calling a backend directly, per strategy.

    .venv/bin/python benchmarks/overhead.py [--n 60] [--arms local-7b/greedy,local-7b/vote@5]

Starts the demo backends, a predictor that covers strategy arms (``classifier.demo_model``),
an embedded Redis and the real grpc.aio service in this process, then times, for each arm:

* direct: the arm's strategy run straight on its backend adapter (no embedding, prediction,
  budget or gRPC);
* gRPC: a streamed ``Generate`` pinned to the arm (``hints.arms``) through the generated
  client: authentication, embedding, prediction, policy, reservation, the same strategy
  run, settlement, the outcome record.

Calls alternate between the two paths so that load from elsewhere hits both alike. Prints
p50 and p99 of each and the difference of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from router.api.app import serve_runtime
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc

PROMPTS = ["What is 17*23?", "What is 1234+4321?", "What is 48*52?", "What is 999-123?"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument(
        "--arms", default="local-7b/greedy,local-7b/vote@5,mid-32b/greedy,mid-32b/vote@5"
    )
    a = ap.parse_args()
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]

    import yaml

    from classifier.demo_model import STRATEGY_ARMS, train_strategy_model
    from router.backends.demo.launcher import DemoBackends
    from router.config.settings import Settings
    from router.config.tenants import hash_api_key
    from router.runtime import build_runtime
    from router.strategies import RunContext

    work = Path(tempfile.mkdtemp(prefix="ttc-overhead-"))
    demo = await asyncio.to_thread(DemoBackends.start, work / "demo")
    try:
        cfg = demo.backends_config(
            [
                s
                for s in STRATEGY_ARMS
                if "escalate" not in s and "beam" not in s and "best" not in s
            ]
        )
        (work / "backends.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        tenants = {
            "tenants": {
                "bench": {
                    "api_key_sha256": hash_api_key("bench-key"),
                    "daily_cap_usd": 1000.0,
                    "allowed_arms": ["*"],
                }
            }
        }
        (work / "tenants.yaml").write_text(yaml.safe_dump(tenants))
        model_dir = await asyncio.to_thread(train_strategy_model, work / "model")
        settings = Settings(
            listen="127.0.0.1:0",
            metrics_listen="",
            backends_file=work / "backends.yaml",
            tenants_file=work / "tenants.yaml",
            model_dir=model_dir,
            outcomes_dir=work / "outcomes",
        )
        runtime = await build_runtime(settings)
        server = (await serve_runtime(runtime, settings)).server
        try:
            core = runtime.core
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]

                async def via_grpc(arm: str, prompt: str) -> float:
                    t0 = time.perf_counter()
                    req = pb.GenerateRequest(prompt=prompt, hints=pb.Hints(arms=[arm]))
                    async for _ in stub.Generate(req, metadata=[("x-api-key", "bench-key")]):
                        pass
                    return (time.perf_counter() - t0) * 1000

                async def direct(arm: str, prompt: str) -> float:
                    spec = core.catalog.get(arm)

                    async def emit(_: str) -> None:
                        return None

                    t0 = time.perf_counter()
                    await spec.strategy.run(
                        RunContext(
                            backend=core.backends[spec.arm.tier],
                            prompt=prompt,
                            max_tokens=256,
                            timeout_s=30.0,
                            emit=emit,
                            backends=core.backends,
                        )
                    )
                    return (time.perf_counter() - t0) * 1000

                print(f"{'arm':<18} {'path':<7} {'p50 ms':>8} {'p99 ms':>8}")
                for arm in arms:
                    for p in PROMPTS:  # warm-up
                        await via_grpc(arm, p)
                        await direct(arm, p)
                    d: list[float] = []
                    g: list[float] = []
                    for i in range(a.n):
                        prompt = PROMPTS[i % len(PROMPTS)]
                        d.append(await direct(arm, prompt))
                        g.append(await via_grpc(arm, prompt))
                    for name, xs in (("direct", d), ("gRPC", g)):
                        print(
                            f"{arm:<18} {name:<7} {statistics.median(xs):8.1f} {pct(xs, 0.99):8.1f}"
                        )
                    added50 = statistics.median(g) - statistics.median(d)
                    added99 = pct(g, 0.99) - pct(d, 0.99)
                    print(f"{arm:<18} {'added':<7} {added50:8.1f} {added99:8.1f}")
        finally:
            await server.shutdown(1.0)
            await runtime.aclose()
    finally:
        demo.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""End-to-end Generate latency and throughput against a running service.

    make serve &                       # or any ttc-router serve
    .venv/bin/python benchmarks/generate.py [--address 127.0.0.1:50051] [--n 50] [--concurrency 16]

Prints p50/p95/p99 of a whole streamed Generate (client-measured), time to the first chunk,
and requests per second at the given concurrency. The prompts rotate over a small fixed set.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc

PROMPTS = [
    "What is 17*23?",
    "What is 1234+4321?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn.",
    "What is the capital of France?",
    "Solve for x: 3x + 5 = 20.",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(stub: router_pb2_grpc.RouterStub, key: str, prompt: str) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    first = 0.0
    arm = ""
    async for msg in stub.Generate(
        pb.GenerateRequest(prompt=prompt), metadata=[("x-api-key", key)]
    ):
        if not first:
            first = time.perf_counter() - t0
        if msg.HasField("final"):
            arm = msg.final.decision.arm
    return (time.perf_counter() - t0) * 1000, first * 1000, arm


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default="127.0.0.1:50051")
    ap.add_argument("--api-key", default="demo-key")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    async with grpc.aio.insecure_channel(a.address) as ch:
        stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
        for p in PROMPTS:  # warm-up
            await one(stub, a.api_key, p)
        seq = [await one(stub, a.api_key, PROMPTS[i % len(PROMPTS)]) for i in range(a.n)]
        total = [s[0] for s in seq]
        first = [s[1] for s in seq]
        arms = sorted({s[2] for s in seq})
        print(
            f"sequential, n={a.n}: total p50 {statistics.median(total):.1f} ms, "
            f"p95 {pct(total, 0.95):.1f} ms, p99 {pct(total, 0.99):.1f} ms; "
            f"first chunk p50 {statistics.median(first):.1f} ms; arms {arms}"
        )
        sem = asyncio.Semaphore(a.concurrency)

        async def limited(i: int) -> tuple[float, float, str]:
            async with sem:
                return await one(stub, a.api_key, PROMPTS[i % len(PROMPTS)])

        n = a.n * 4
        t0 = time.perf_counter()
        res = await asyncio.gather(*[limited(i) for i in range(n)])
        wall = time.perf_counter() - t0
        lat = [r[0] for r in res]
        print(
            f"concurrency {a.concurrency}, n={n}: {n / wall:.1f} req/s, "
            f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 0.99):.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())

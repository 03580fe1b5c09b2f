"""Throughput of the Redis budget ledger: reserve + settle pairs per second.

    python benchmarks/ledger.py [--url redis://127.0.0.1:6379/0] [--concurrency 64] [--seconds 5]
    python benchmarks/ledger.py --processes 4     # four processes at once, figures summed

Uses REDIS_URL when --url is not given, else the redis-server on 127.0.0.1:6379. Every
pair is a reserve (daily and monthly caps) followed by a settle with a small audit entry;
the run uses its own key prefix and tenants and deletes their keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid

from router.ledger import RedisLedger

PREFIX = "ttcbench"


async def _worker(ledger: RedisLedger, tenant: str, stop_at: float, latencies: list[float]) -> int:
    caps = {"daily": 10**15, "monthly": 10**15}
    pairs = 0
    while time.perf_counter() < stop_at:
        rid = uuid.uuid4().hex
        started = time.perf_counter()
        await ledger.reserve(tenant, rid, 2_000, caps, hold_ttl_s=60)
        await ledger.settle(tenant, rid, 1_500, {"arm": "local-7b/greedy", "tokens": "512"})
        latencies.append(time.perf_counter() - started)
        pairs += 1
    return pairs


async def run(url: str, concurrency: int, seconds: float, tenants: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    names = [f"bench-{run_id}-{i}" for i in range(tenants)]
    ledger = RedisLedger.from_url(url, key_prefix=PREFIX)
    try:
        await _worker(ledger, names[0], time.perf_counter() + 0.5, [])  # warm up
        latencies: list[float] = []
        stop_at = time.perf_counter() + seconds
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(_worker(ledger, names[i % tenants], stop_at, latencies) for i in range(concurrency))
        )
        elapsed = time.perf_counter() - started
    finally:
        client = ledger._client
        for name in names:
            keys = [k async for k in client.scan_iter(match=f"{PREFIX}:{{t:{name}}}:*")]
            if keys:
                await client.delete(*keys)
        await ledger.aclose()
    total = sum(counts)
    q = statistics.quantiles(latencies, n=100)
    print(f"PAIRS {total} {elapsed:.6f}")
    print(
        f"{total / elapsed:,.0f} reserve+settle pairs/s "
        f"({total} pairs in {elapsed:.1f} s, concurrency {concurrency}, {tenants} tenant(s), "
        f"pair latency p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms) "
        f"against {ledger.address}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.processes > 1:
        run_processes(args)
    else:
        asyncio.run(run(args.url, args.concurrency, args.seconds, args.tenants))


def run_processes(args: argparse.Namespace) -> None:
    """Start ``args.processes`` copies of the one-process benchmark at once; sum their rates."""
    cmd = [
        sys.executable,
        __file__,
        "--url",
        args.url,
        "--concurrency",
        str(args.concurrency),
        "--seconds",
        str(args.seconds),
        "--tenants",
        str(args.tenants),
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.processes)
    ]
    rate = 0.0
    for p in procs:
        out, _ = p.communicate()
        for line in out.splitlines():
            if line.startswith("PAIRS "):
                _, pairs, elapsed = line.split()
                rate += int(pairs) / float(elapsed)
            else:
                print(f"  {line}")
    print(f"{rate:,.0f} reserve+settle pairs/s from {args.processes} processes together")


if __name__ == "__main__":
    main()

"""Prompt-embedder latency and throughput on this machine.

Run: ``python benchmarks/embedder.py [--int8] [--threads N] [--seconds S]``.
Prints single-prompt latency, per-item latency at batch 32 (32- and 128-token prompts),
and the throughput of ``BatchedEmbedder`` under 64 concurrent callers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier.embedder import BatchedEmbedder, OnnxEmbedder

_VOCAB = (
    "the", "budget", "of", "each", "tenant", "is", "spent", "on", "cheap", "arms", "for",
    "easy", "prompts", "and", "more", "samples", "or", "a", "stronger", "tier", "hard",
    "ones", "while", "router", "keeps", "latency", "low", "answers", "good",
)  # fmt: skip


def prompt_of(embedder: OnnxEmbedder, tokens: int, rng: random.Random) -> str:
    """A prompt of exactly ``tokens`` model tokens, [CLS] and [SEP] included."""
    words: list[str] = []
    while embedder.count_tokens(" ".join(words)) < tokens - 2:
        words.append(rng.choice(_VOCAB))
    text = " ".join(words)
    while embedder.count_tokens(text) > tokens - 2:
        text = text.rsplit(" ", 1)[0]
    return text


def timed_ms(fn: object, repeats: int) -> list[float]:
    assert callable(fn)
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def bench_sync(embedder: OnnxEmbedder, tokens: int, repeats: int) -> None:
    rng = random.Random(tokens)
    prompts = [prompt_of(embedder, tokens, rng) for _ in range(32)]
    single = timed_ms(lambda: embedder.embed_batch(prompts[:1]), repeats)
    batch = timed_ms(lambda: embedder.embed_batch(prompts), max(3, repeats // 8))
    print(
        f"{tokens:>4} tokens | single p50 {statistics.median(single):6.2f} ms"
        f" (min {min(single):6.2f}) | batch 32: {statistics.median(batch) / 32:6.2f} ms/item"
        f" ({32000.0 / statistics.median(batch):6.1f} prompts/s)"
    )


def bench_mixed(embedder: OnnxEmbedder, repeats: int) -> None:
    """31 short prompts and one long one: the batch is split by length, not padded to 256."""
    rng = random.Random(7)
    prompts = [prompt_of(embedder, 32, rng) for _ in range(31)]
    prompts.append(prompt_of(embedder, 256, rng))
    batch = timed_ms(lambda: embedder.embed_batch(prompts), max(3, repeats // 8))
    print(f"mixed 31x32 + 1x256 tokens | batch: {statistics.median(batch):6.1f} ms")


async def bench_concurrent(embedder: OnnxEmbedder, tokens: int, seconds: float) -> None:
    rng = random.Random(1000 + tokens)
    prompts = [prompt_of(embedder, tokens, rng) for _ in range(64)]
    batched = BatchedEmbedder(embedder, max_batch=32, max_wait_ms=2.0)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await batched.embed(prompts[i])
            latencies.append((time.perf_counter() - start) * 1000.0)

    await batched.embed(prompts[0])
    begin = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(64)))
    elapsed = time.perf_counter() - begin
    await batched.aclose()
    stats = batched.stats
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"{tokens:>4} tokens | 64 callers: {len(latencies) / elapsed:6.1f} prompts/s"
        f" | latency p50 {statistics.median(latencies):6.1f} ms p99 {p99:6.1f} ms"
        f" | mean batch {stats.items / stats.batches:4.1f}, max {stats.max_batch_seen}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", action="store_true", help="the int8 quantised graph")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--spin", action="store_true", help="busy-waiting ONNX Runtime threads")
    parser.add_argument("--repeats", type=int, default=50, help="timed single-prompt runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="concurrent run length")
    args = parser.parse_args()

    start = time.perf_counter()
    embedder = OnnxEmbedder.load(threads=args.threads, quantized=args.int8, spin=args.spin)
    print(f"model {embedder.model_path.name} opened in {time.perf_counter() - start:.2f} s")
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    for tokens in (32, 128):
        bench_sync(embedder, tokens, args.repeats)
    bench_mixed(embedder, args.repeats)
    for tokens in (32, 128):
        asyncio.run(bench_concurrent(embedder, tokens, args.seconds))


if __name__ == "__main__":
    main()

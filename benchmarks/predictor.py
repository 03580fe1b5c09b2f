"""Predictor latency beyond the embedding, on this machine.

Run: ``python benchmarks/predictor.py [--model DIR] [--n N] [--threads N]``. Prints the
median and 99th-percentile time of ``OnnxPredictor.predict`` for one prompt (text features
+ ONNX graph, the embedding given), and the per-prompt time of ``predict_batch`` at batch
256. ``--threads`` sets ONNX Runtime's intra-op threads, as ``TTC_PREDICTOR_THREADS`` does
in the service.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier.predictor import OnnxPredictor, default_model_dir

PROMPTS = (
    "What is 17*23?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "def f(xs):\n    return sorted(set(xs))[::-1]\nassert f([3, 1, 3, 2]) == ??",
    "Prove that the square root of 2 is irrational.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads (as the service's)"
    )
    args = parser.parse_args()
    predictor = OnnxPredictor.load(args.model, intra_op_threads=args.threads)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(256, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for i in range(200):
        predictor.predict(emb[i % 256], PROMPTS[i % len(PROMPTS)])
    times = []
    for i in range(args.n):
        t0 = time.perf_counter()
        predictor.predict(emb[i % 256], PROMPTS[i % len(PROMPTS)])
        times.append(time.perf_counter() - t0)
    times.sort()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(256)]
    predictor.predict_batch(emb, prompts)
    t0 = time.perf_counter()
    for _ in range(20):
        predictor.predict_batch(emb, prompts)
    batch = (time.perf_counter() - t0) / 20 / 256
    size = (args.model / "model.onnx").stat().st_size
    print(f"model {predictor.version} ({len(predictor.arms)} arms, model.onnx {size / 1e6:.2f} MB)")
    print(
        f"predict, one prompt: median {statistics.median(times) * 1e3:.3f} ms, "
        f"p99 {times[int(0.99 * len(times))] * 1e3:.3f} ms (embedding given)"
    )
    print(f"predict_batch at 256: {batch * 1e3:.4f} ms per prompt")


if __name__ == "__main__":
    main()

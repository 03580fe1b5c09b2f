"""kill -9 tests of the outcome log on a real Redis.

(a) ``ttc-router outcomes sink`` killed while it writes its batches, twice, then run to the
end: every record is in the Parquet files exactly once.
(b) a ``ttc-router serve`` replica logging to the stream killed while Generate calls stream:
every decision the ledger settled (its audit stream) ends up in Parquet exactly once after a
sink runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc
from router.config.backends import BackendsConfig
from router.config.tenants import hash_api_key
from router.ledger.keys import TenantKeys
from router.outcomes.logs import read_logs
from router.outcomes.redis_stream import stream_fields
from tests.integration.fixtures.redis_server import free_port
from tests.integration.fixtures.service import spawn_serve, wait_serving, write_backends

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 5, 6, 20, 0, tzinfo=UTC)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    try:
        yield c
    finally:
        c.close()


def parquet_ids(directory: Path, kind: str = "decisions") -> Counter[str]:
    ids: Counter[str] = Counter()
    for part in (directory / kind).glob("day=*/part-*.parquet"):
        ids.update(pq.read_table(part, columns=["decision_id"]).column(0).to_pylist())
    return ids


def parts(directory: Path) -> set[Path]:
    return set(directory.glob("*/day=*/part-*.parquet"))


def drained(client: redis.Redis, stream: str, group: str = "ttc-sink") -> bool:
    info: Any = client.xinfo_stream(stream)
    groups: Any = client.xinfo_groups(stream)
    for g in groups:
        if g["name"] == group.encode():
            return bool(g["pending"] == 0 and g["last-delivered-id"] == info["last-generated-id"])
    return False


def sink_cmd(redis_url: str, stream: str, directory: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "router.cli.main",
        "outcomes",
        "sink",
        "--redis-url",
        redis_url,
        "--stream",
        stream,
        "--dir",
        str(directory),
        *extra,
    ]


def finish_sink(cmd: list[str], client: redis.Redis, stream: str, timeout_s: float = 30.0) -> str:
    """Run the sink until the stream is drained, stop it with SIGTERM; its output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not drained(client, stream):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the sink did not drain the stream in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    return out


def test_a_sink_killed_mid_batch_leaves_every_record_once(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    stream = f"ttc:kill-sink:{uuid.uuid4().hex}"
    n, scored = 6000, 600
    prompt = "Explain the difference between a list and a tuple. " * 20  # about 1 kB
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        rec = {
            "decision_id": f"d{i:05d}",
            "prompt_id": f"p{i}",
            "prompt": f"{i}: {prompt}",
            "arm": "local-7b/greedy",
            "score": None,
            "cost_usd": 1e-5,
            "tenant": "alpha",
            "ts": (DAY0 + timedelta(seconds=29 * i)).isoformat(),  # two UTC days per batch
            "detail": {"i": i},
        }
        pipe.xadd(stream, stream_fields("decision", rec))  # type: ignore[arg-type]
    for i in range(scored):
        ts = (DAY0 + timedelta(days=2, seconds=i)).isoformat()
        score = {"decision_id": f"d{i * 10:05d}", "tenant": "alpha", "score": 1.0, "ts": ts}
        pipe.xadd(stream, stream_fields("score", score))  # type: ignore[arg-type]
    pipe.execute()

    cmd = sink_cmd(
        redis_url, stream, tmp_path, "--consumer", "kill-me", "--batch", "1500", "--flush-s", "1"
    )
    for _ in range(2):
        before = parts(tmp_path)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not parts(tmp_path) - before:
                assert proc.poll() is None, "the sink exited on its own"
                assert time.monotonic() < deadline, "no part file appeared"
                time.sleep(0.005)
        finally:
            proc.kill()  # SIGKILL: no flush, no ack
            proc.wait()
        pending: Any = client.xpending(stream, "ttc-sink")
        print(f"killed with {len(parts(tmp_path))} parts written, {pending['pending']} pending")
    assert not drained(client, stream), "the kills came too late to test anything"

    out = finish_sink(cmd, client, stream)
    assert "stopped:" in out

    ids = parquet_ids(tmp_path)
    assert sorted(ids) == [f"d{i:05d}" for i in range(n)]
    assert set(ids.values()) == {1}, [k for k, v in ids.items() if v > 1][:5]
    score_ids = parquet_ids(tmp_path, "scores")
    assert len(score_ids) == scored and set(score_ids.values()) == {1}
    assert not list(tmp_path.glob("*/day=*/.part-*.tmp"))
    records = read_logs(tmp_path, scored_only=True)
    assert len(records) == scored and records[0]["detail"] == {"i": 0}


def _tenants(path: Path, tenant: str, key: str) -> Path:
    doc = {
        "tenants": {
            tenant: {
                "api_key_sha256": hash_api_key(key),
                "daily_cap_usd": 100.0,
                "allowed_arms": ["*"],
                "lambda_per_usd": 50.0,
                "pacing": False,
            }
        }
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_killed_replicas_settled_decisions_reach_parquet_once(
    redis_url: str,
    client: redis.Redis,
    tmp_path: Path,
    demo_backends_config: BackendsConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tenant, key = f"kill-{uuid.uuid4().hex[:8]}", "kill-test-key"
    stream = f"ttc:kill-serve:{uuid.uuid4().hex}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TTC_") and k != "REDIS_URL"}
    env.update(
        REDIS_URL=redis_url,
        TTC_LISTEN=f"127.0.0.1:{port}",
        TTC_METRICS_LISTEN="",
        TTC_BACKENDS_FILE=str(write_backends(demo_backends_config, tmp_path / "backends.yaml")),
        TTC_TENANTS_FILE=str(_tenants(tmp_path / "tenants.yaml", tenant, key)),
        TTC_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cache"),
        TTC_OUTCOMES_DIR=str(tmp_path / "replica-outcomes"),
        TTC_OUTCOME_LOG="redis",
        TTC_OUTCOME_DRAIN="false",
        TTC_OUTCOME_STREAM=stream,
        HF_HUB_OFFLINE="1",
    )
    metadata = [("x-api-key", key)]
    proc = spawn_serve(env)
    address = f"127.0.0.1:{port}"
    streaming: list[threading.Event] = [threading.Event() for _ in range(4)]
    try:
        wait_serving(address, proc)
        with grpc.insecure_channel(address) as ch:
            stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]

            def answer(i: int) -> str:
                req = pb.GenerateRequest(prompt=f"What is {i + 12}*{i + 7}?")
                [final] = [
                    m.final
                    for m in stub.Generate(req, metadata=metadata, timeout=60)
                    if m.HasField("final")
                ]
                return str(final.decision.decision_id)

            with ThreadPoolExecutor(6) as pool:
                finished = list(pool.map(answer, range(24)))
            for did in finished[::2]:
                stub.RecordOutcome(
                    pb.RecordOutcomeRequest(decision_id=did, score=1.0), metadata=metadata
                )

            # Calls that stream a few tokens, then stall: in flight when the replica dies.
            def stall(i: int) -> None:
                req = pb.GenerateRequest(
                    prompt=f"[demo-fault:slow] What is {i}*{i + 3}?",
                    hints=pb.Hints(arms=["local-7b/greedy"]),
                )
                try:
                    for msg in stub.Generate(req, metadata=metadata, timeout=60):
                        if msg.HasField("delta"):
                            streaming[i].set()
                except grpc.RpcError:
                    pass

            threads = [threading.Thread(target=stall, args=(i,)) for i in range(len(streaming))]
            for t in threads:
                t.start()
            for ev in streaming:
                assert ev.wait(30), "a call did not start streaming"
            proc.kill()
            proc.wait()
            for t in threads:
                t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    audit: Any = client.xrange(TenantKeys("ttc", tenant).audit)
    settled = [fields[b"decision_id"].decode() for _, fields in audit]
    assert sorted(settled) == sorted(finished)  # the stalled calls were never settled

    sink_dir = tmp_path / "outcomes"
    finish_sink(sink_cmd(redis_url, stream, sink_dir, "--consumer", "after-kill"), client, stream)
    ids = parquet_ids(sink_dir)
    assert sorted(ids) == sorted(settled)
    assert set(ids.values()) == {1}
    records = {r["decision_id"]: r for r in read_logs(sink_dir)}
    assert {d for d, r in records.items() if r["score"] == 1.0} == set(finished[::2])
    assert all(r["tenant"] == tenant and r["error"] is None for r in records.values())

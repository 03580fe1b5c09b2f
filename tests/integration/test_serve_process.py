"""`ttc-router serve` as a real process: embedded Redis, clean drain on SIGTERM, SIGHUP reload."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc
from router.config.backends import BackendsConfig
from tests.integration.fixtures.redis_server import free_port
from tests.integration.fixtures.service import (
    spawn_serve,
    wait_serving,
    write_backends,
    write_tenants,
)

pytestmark = pytest.mark.integration


def test_serve_with_embedded_redis_drains_on_sigterm(
    tmp_path: Path, demo_backends_config: BackendsConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TTC_REDIS_URL")}
    tenants = write_tenants(tmp_path / "tenants.yaml")
    env.update(
        TTC_LISTEN=f"127.0.0.1:{port}",
        TTC_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        TTC_BACKENDS_FILE=str(write_backends(demo_backends_config, tmp_path / "backends.yaml")),
        TTC_TENANTS_FILE=str(tenants),
        TTC_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cache"),
        TTC_OUTCOMES_DIR=str(tmp_path / "outcomes"),
        HF_HUB_OFFLINE="1",
    )
    proc = spawn_serve(env)
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, proc)
        with grpc.insecure_channel(address) as ch:
            stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
            key = [("x-api-key", "alpha-key")]
            finals = [
                m.final
                for m in stub.Generate(pb.GenerateRequest(prompt="What is 17*23?"), metadata=key)
                if m.HasField("final")
            ]
            assert "391" in finals[0].answer
            spent = stub.GetBudget(pb.GetBudgetRequest(), metadata=key).windows[0].spent_micros
            assert spent == finals[0].cost_micros  # a fresh embedded Redis holds only this
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as resp:
                scraped = resp.read().decode()
            assert 'ttc_rpc_calls_total{code="OK",method="Generate"} 1.0' in scraped
            # SIGHUP with a broken tenants file keeps the old tenants
            good = tenants.read_text()
            tenants.write_text("tenants: [not, a, mapping]\n")
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert stub.GetBudget(pb.GetBudgetRequest(), metadata=key).tenant == "alpha"
            tenants.write_text(good)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "(embedded)" in out
    assert "kept the previous tenants" in out
    assert "draining" in out and "stopped" in out

"""``ttc-router budget show|reconcile`` against a real Redis, and the tenants.yaml file watch."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from router.cli.main import app
from router.config.tenants import TenantsConfig, hash_api_key, watch_tenants_file
from router.core.service import Tenant
from router.ledger import RedisLedger
from router.ledger.keys import TenantKeys
from tests.integration.fixtures.service import Service

pytestmark = pytest.mark.integration

USD = 1_000_000


def write_tenants(path: Path, tenants: dict[str, dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


def doc(name: str, **kw: object) -> dict[str, object]:
    return {"api_key_sha256": hash_api_key(f"{name}-{uuid.uuid4().hex}"), **kw}


async def spend(url: str, tenant: str, caps: dict[str, int], tz: str) -> None:
    async with RedisLedger.from_url(url) as led:
        for i in range(3):
            await led.reserve(tenant, f"r{i}", USD, caps, hold_ttl_s=60, tz=tz)
            await led.settle(tenant, f"r{i}", 250_000 * (i + 1), {"arm": "a/greedy"}, tz=tz)
        await led.reserve(tenant, "open", 2 * USD, caps, hold_ttl_s=60, tz=tz)


def test_show_and_reconcile_read_redis_directly(redis_url: str, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    caps = {"hourly": 5 * USD, "monthly": 100 * USD}
    tenants = write_tenants(
        tmp_path / "tenants.yaml",
        {
            name: doc(
                name,
                hourly_cap_usd=5,
                monthly_cap_usd=100,
                timezone="Asia/Tokyo",
                pacing=True,
                lambda_per_usd=10,
                max_request_usd=2,
            )
        },
    )
    asyncio.run(spend(redis_url, name, caps, "Asia/Tokyo"))
    runner = CliRunner()
    args = ["--redis-url", redis_url, "--tenants-file", str(tenants)]

    shown = runner.invoke(app, ["budget", "show", name, *args])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert f"budget of tenant {name} (Asia/Tokyo)" in out
    assert "$5.000000" in out and "$100.000000" in out  # caps
    assert "$1.500000" in out  # spent
    assert "$2.000000" in out  # held
    assert "+09:00" in out  # reset times in the tenant's zone
    assert "λ " in out and "configured 10" in out and "per-request cap $2.000000" in out

    ok = runner.invoke(app, ["budget", "reconcile", name, *args])
    assert ok.exit_code == 0, ok.output
    assert "all 4 window(s) agree" in ok.output

    # a counter that drifted from the audit trail is caught
    client = redis.Redis.from_url(redis_url)
    try:
        key = next(client.scan_iter(match=f"{TenantKeys('ttc', name).base}:spent:hourly:*"))
        client.incrby(key, 7)
    finally:
        client.close()
    bad = runner.invoke(app, ["budget", "reconcile", name, *args])
    assert bad.exit_code == 1
    assert "MISMATCH" in bad.output


def test_show_needs_a_redis_url_and_a_known_tenant(tmp_path: Path, redis_url: str) -> None:
    runner = CliRunner()
    tenants = write_tenants(tmp_path / "t.yaml", {"acme": doc("acme", daily_cap_usd=1)})
    res = runner.invoke(
        app, ["budget", "show", "--tenants-file", str(tenants)], env={"REDIS_URL": ""}
    )
    assert res.exit_code == 2 and "REDIS_URL" in res.output
    res = runner.invoke(
        app, ["budget", "show", "nobody", "--tenants-file", str(tenants), "--redis-url", redis_url]
    )
    assert res.exit_code == 2 and "'nobody' is not in" in res.output


async def test_tenants_file_changes_apply_and_bad_files_keep_the_old_config(
    tmp_path: Path,
) -> None:
    path = write_tenants(tmp_path / "tenants.yaml", {"a": doc("a", daily_cap_usd=1)})
    applied: list[TenantsConfig] = []
    errors: list[str] = []
    task = asyncio.create_task(
        watch_tenants_file(path, applied.append, interval_s=0.05, on_error=errors.append)
    )

    async def until(cond: object) -> None:
        for _ in range(100):
            if callable(cond) and cond():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the watch did not react")

    try:
        await asyncio.sleep(0.1)
        assert applied == [] and errors == []  # nothing changed yet
        write_tenants(path, {"a": doc("a", daily_cap_usd=1), "b": doc("b", hourly_cap_usd=2)})
        await until(lambda: len(applied) == 1)
        assert set(applied[0].tenants) == {"a", "b"}
        path.write_text("tenants:\n  a:\n    api_key_sha256: nope\n    daily_cap_usd: 1\n")
        await until(lambda: len(errors) == 1)
        assert "api_key_sha256" in errors[0] and str(path) in errors[0]
        assert len(applied) == 1
        write_tenants(path, {"c": doc("c", weekly_cap_usd=3, timezone="Europe/Paris")})
        await until(lambda: len(applied) == 2)
        assert applied[1].tenants["c"].caps_micros == {"weekly": 3 * USD}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_show_over_grpc_and_the_budget_view_carry_lambda(service: Service) -> None:
    from router.api.convert import budget_to_pb

    runner = CliRunner()
    res = await asyncio.to_thread(
        runner.invoke,
        app,
        ["budget", "show", "--grpc", "--address", service.address, "--api-key", "alpha-key"],
    )
    assert res.exit_code == 0, res.output
    assert "budget of tenant alpha" in res.output and "daily" in res.output
    tenants = service.runtime.tenants
    tenant = Tenant("alpha", tenants.tenants["alpha"])
    view = await service.runtime.core.budget_view(tenant)
    msg = budget_to_pb("alpha", view)
    assert (
        msg.lambda_per_usd == tenants.tenants["alpha"].lambda_per_usd + view.pacing_lambda_per_usd
    )
    assert msg.timezone == "UTC" and [w.window for w in msg.windows] == ["daily"]

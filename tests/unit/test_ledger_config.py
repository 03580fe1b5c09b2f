"""Budget configuration: window caps, time zones, per-request cap, GPU-second prices,
failure policies and the Redis URL forms the ledger accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from router.config.backends import TierConfig
from router.config.loader import load_tenants
from router.config.tenants import TenantConfig, hash_api_key
from router.errors import ConfigError
from router.ledger.connect import parse_multi_host
from router.ledger.redis_ledger import RedisLedger

KEY = hash_api_key("k")


def tenant(**kw: Any) -> TenantConfig:
    return TenantConfig.model_validate({"api_key_sha256": KEY, **kw})


def test_every_window_may_be_capped_and_daily_is_optional() -> None:
    t = tenant(hourly_cap_usd=1, weekly_cap_usd=5.5, monthly_cap_usd=20)
    assert t.caps_micros == {"hourly": 1_000_000, "weekly": 5_500_000, "monthly": 20_000_000}
    assert t.daily_cap_micros == 0
    assert tenant(daily_cap_usd=2).caps_micros == {"daily": 2_000_000}


def test_a_tenant_without_any_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="daily_cap_usd"):
        tenant()
    with pytest.raises(ValidationError, match="at least one of"):
        tenant(daily_cap_usd=None)


def test_time_zone_must_be_iana() -> None:
    assert tenant(daily_cap_usd=1, timezone="Europe/Berlin").timezone == "Europe/Berlin"
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        tenant(daily_cap_usd=1, timezone="Mars/Olympus")


def test_per_request_cap_is_checked_against_the_windows() -> None:
    assert tenant(daily_cap_usd=1, max_request_usd=0.25).max_request_micros == 250_000
    with pytest.raises(ValidationError, match="max_request_usd must not exceed"):
        tenant(hourly_cap_usd=0.1, daily_cap_usd=1, max_request_usd=0.2)


def test_unknown_budget_keys_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    doc = {"tenants": {"acme": {"api_key_sha256": KEY, "hourly_cap_usd": 1, "yearly_cap_usd": 9}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ConfigError, match=r"tenants.yaml:5: unknown key 'yearly_cap_usd'"):
        load_tenants(path)


TIER = {"protocol": "triton", "endpoint": "x:1", "model": "m"}


def test_gpu_second_price_becomes_per_token_prices() -> None:
    t = TierConfig.model_validate(
        {
            **TIER,
            "price": {
                "per_gpu_second_usd": 2.0,
                "gpu_share": 0.25,
                "gpu_ms_per_input_token": 0.5,
                "gpu_ms_per_output_token": 12,
            },
        }
    )
    # $2/GPU-s × 0.25 GPU × 12 ms = $0.006 per output token = $6000 per million
    assert t.price.output_per_mtok == pytest.approx(6000.0)
    assert t.price.input_per_mtok == pytest.approx(250.0)
    assert t.price.per_gpu_second
    # 10 input and 100 output tokens: 0.25 × (5 ms + 1200 ms) × $2/s = $0.6025
    assert t.price.to_price().micros(10, 100) == 602_500
    # a dumped config loads again (what the test fixtures do)
    assert TierConfig.model_validate(t.model_dump()).price == t.price


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ({"per_gpu_second_usd": 2.0, "gpu_ms_per_output_token": 12}, "needs gpu_share"),
        (
            {
                "per_gpu_second_usd": 2.0,
                "gpu_share": 0.5,
                "gpu_ms_per_output_token": 1,
                "output_per_mtok": 3.0,
                "input_per_mtok": 0,
            },
            "not both",
        ),
        ({"per_gpu_second_usd": 2.0, "gpu_share": 1.5, "gpu_ms_per_output_token": 1}, "gpu_share"),
    ],
)
def test_bad_gpu_prices_are_refused(price: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TierConfig.model_validate({**TIER, "price": price})


def test_failure_policy_defaults_to_closed_and_is_strict() -> None:
    price = {"input_per_mtok": 1, "output_per_mtok": 1}
    assert TierConfig.model_validate({**TIER, "price": price}).failure_policy == "fail_closed"
    t = TierConfig.model_validate(
        {**TIER, "price": price, "failure_policy": "fail_open", "fail_open_allowance_usd": 0.5}
    )
    assert (t.failure_policy, t.fail_open_allowance_usd) == ("fail_open", 0.5)
    with pytest.raises(ValidationError, match="failure_policy"):
        TierConfig.model_validate({**TIER, "price": price, "failure_policy": "maybe"})


def test_sentinel_urls_are_parsed() -> None:
    t = parse_multi_host("redis+sentinel://u:p%40ss@s1:26379,s2,s3:26380/mymaster/2")
    assert t.kind == "sentinel" and not t.tls
    assert t.hosts == (("s1", 26379), ("s2", 26379), ("s3", 26380))
    assert (t.username, t.password, t.service, t.db) == ("u", "p@ss", "mymaster", 2)
    assert t.sentinel_password == "p@ss"
    assert "p@ss" not in t.display and "p%40ss" not in t.display
    t = parse_multi_host("rediss+sentinel://s1/m?sentinel_password=other")
    assert (t.tls, t.sentinel_password, t.password) == (True, "other", None)


def test_cluster_urls_are_parsed() -> None:
    t = parse_multi_host("redis+cluster://:pw@n1:7000,n2:7001")
    assert (t.kind, t.hosts, t.password) == ("cluster", (("n1", 7000), ("n2", 7001)), "pw")
    assert t.display == "redis+cluster://n1:7000,n2:7001"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "service name"),
        ("redis+cluster://n1:7000/3", "no path"),
        ("redis+sentinel://s1:notaport/m", "bad port"),
        ("memcached://h", "must start with"),
    ],
)
def test_bad_multi_host_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedisLedger.from_url(url)


def test_sentinel_and_cluster_urls_make_ledgers_without_connecting() -> None:
    led = RedisLedger.from_url("redis+sentinel://:pw@127.0.0.1:1/mymaster")
    assert led.address == "redis+sentinel://127.0.0.1:1/mymaster/0"
    led = RedisLedger.from_url("redis+cluster://127.0.0.1:1")
    assert led.address == "redis+cluster://127.0.0.1:1"

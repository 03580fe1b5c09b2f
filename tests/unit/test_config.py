"""Strict validation of backends.yaml and tenants.yaml: one bad-file fixture per rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli.main import app
from router.config.loader import check_file, load_backends, load_tenants
from router.config.tenants import hash_api_key
from router.errors import ConfigError

BAD = Path(__file__).parent / "bad_config"
ROOT = Path(__file__).resolve().parents[2]

# file, expected line, words the message must contain
CASES = [
    ("backends_unknown_key.yaml", 6, ["unknown key 'endpont'", "tiers.local-7b.endpont"]),
    ("backends_missing_price.yaml", 2, ["missing required key tiers.local-7b.price"]),
    ("backends_arm_unknown_tier.yaml", 7, ["mid-32b", "not under tiers"]),
    ("backends_bad_arm_name.yaml", 8, ["<tier>/<strategy>"]),
    ("backends_negative_price.yaml", 7, ["input_per_mtok", "greater than or equal to 0"]),
    ("backends_bad_protocol.yaml", 3, ["protocol", "'triton'"]),
    ("backends_duplicate_arm.yaml", 7, ["must not repeat"]),
    ("malformed_yaml.yaml", 5, ["not valid YAML"]),
    ("tenants_bad_hash.yaml", 3, ["api_key_sha256", "64 lowercase hex", "hash-key"]),
    ("tenants_unknown_key.yaml", 5, ["unknown key 'dayly_cap_usd'"]),
    ("tenants_zero_cap.yaml", 4, ["daily_cap_usd", "greater than 0"]),
    ("tenants_shared_key.yaml", 1, ["share one api_key_sha256"]),
    ("tenants_bad_id.yaml", 1, ["tenant id 'acme corp!'"]),
    ("tenants_missing_cap.yaml", 2, ["missing required key tenants.acme.daily_cap_usd"]),
]


def _load(path: Path) -> object:
    return load_tenants(path) if path.name.startswith("tenants") else load_backends(path)


@pytest.mark.parametrize(("name", "line", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_names_file_line_and_key(name: str, line: int, words: list[str]) -> None:
    path = BAD / name
    with pytest.raises(ConfigError) as info:
        _load(path)
    msg = info.value.message
    assert f"{path}:{line}:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_every_fixture_is_covered() -> None:
    covered = {c[0] for c in CASES} | {"empty.yaml", "top_level_list.yaml"}
    assert covered == {p.name for p in BAD.glob("*.yaml")}


def test_empty_and_non_mapping_files() -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_backends(BAD / "empty.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_tenants(BAD / "top_level_list.yaml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_backends(BAD / "does-not-exist.yaml")


def test_shipped_examples_are_valid() -> None:
    b = load_backends(ROOT / "backends.yaml")
    assert set(b.tiers) == {"local-7b", "mid-32b", "premium"}
    t = load_tenants(ROOT / "tenants.yaml")
    assert t.by_key("acme-key-change-me") is not None
    assert t.by_key("wrong") is None
    assert "tenant(s)" in check_file(ROOT / "tenants.yaml")


def test_hash_key_matches_stored_form() -> None:
    t = load_tenants(ROOT / "router/config/defaults/tenants.demo.yaml")
    name, cfg = t.by_key("demo-key") or ("", None)
    assert name == "demo" and cfg is not None
    assert cfg.api_key_sha256 == hash_api_key("demo-key")


def test_config_check_command_exit_codes() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", str(ROOT / "backends.yaml")])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["config", "check", str(BAD / "backends_unknown_key.yaml")])
    assert bad.exit_code == 1
    assert "unknown key 'endpont'" in bad.output


def test_predictor_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from router.config.settings import Settings

    assert Settings().predictor_threads == 1
    monkeypatch.setenv("TTC_PREDICTOR_THREADS", "2")
    assert Settings().predictor_threads == 2
    monkeypatch.setenv("TTC_PREDICTOR_THREADS", "0")
    with pytest.raises(ValidationError, match="predictor_threads"):
        Settings()

"""The schema of tenants.yaml: who may call, with which key, spending how much, on which arms."""

from __future__ import annotations

import hashlib
import hmac
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def hash_api_key(key: str) -> str:
    """The form an API key is stored in: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_sha256: str
    daily_cap_usd: float = Field(gt=0)
    allowed_arms: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    lambda_per_usd: float = Field(default=100.0, ge=0)
    max_request_usd: float | None = Field(default=None, gt=0)

    @field_validator("api_key_sha256")
    @classmethod
    def _is_sha256(cls, v: str) -> str:
        if not _SHA256_HEX.match(v):
            raise ValueError(
                "must be 64 lowercase hex characters: the SHA-256 of the key "
                "(make one with `ttc-router config hash-key KEY`)"
            )
        return v

    def key_matches(self, key: str) -> bool:
        return hmac.compare_digest(self.api_key_sha256, hash_api_key(key))

    def allows(self, arm: str) -> bool:
        return "*" in self.allowed_arms or arm in self.allowed_arms

    @property
    def daily_cap_micros(self) -> int:
        return round(self.daily_cap_usd * 1_000_000)


class TenantsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantConfig] = Field(min_length=1)

    @field_validator("tenants")
    @classmethod
    def _ids_well_formed(cls, v: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for name in v:
            if not _TENANT_ID.match(name):
                raise ValueError(
                    f"tenant id {name!r} must be 1-64 of letters, digits, '.', '_' or '-'"
                )
        hashes = [t.api_key_sha256 for t in v.values()]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two tenants share one api_key_sha256; every tenant needs its own key")
        return v

    def by_key(self, key: str) -> tuple[str, TenantConfig] | None:
        digest = hash_api_key(key)
        for name, t in self.tenants.items():
            if hmac.compare_digest(t.api_key_sha256, digest):
                return name, t
        return None

"""The schema of tenants.yaml: who may call, with which key, spending how much, on which arms.

A tenant has a cap on any of its ``hourly``, ``daily``, ``weekly`` and ``monthly`` windows
(at least one), aligned to the calendar in its ``timezone``, and optionally a per-request
ceiling. ``watch_tenants_file`` reloads the file when it changes and keeps the previous
config when the new one is invalid.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.errors import ConfigError

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CAP_FIELDS = {
    "hourly": "hourly_cap_usd",
    "daily": "daily_cap_usd",
    "weekly": "weekly_cap_usd",
    "monthly": "monthly_cap_usd",
}
MICROS_PER_USD = 1_000_000

log = logging.getLogger("ttc_router.config")


def hash_api_key(key: str) -> str:
    """The form an API key is stored in: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class TenantConfig(BaseModel):
    """One tenant. Caps are USD per window; ``daily_cap_usd`` is required unless another is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_sha256: str
    # Required (possibly null) so that a tenant with no cap at all is told which key is missing.
    daily_cap_usd: float | None = Field(gt=0)
    hourly_cap_usd: float | None = Field(default=None, gt=0)
    weekly_cap_usd: float | None = Field(default=None, gt=0)
    monthly_cap_usd: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    allowed_arms: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    lambda_per_usd: float = Field(default=100.0, ge=0)
    pacing: bool = True
    max_request_usd: float | None = Field(default=None, gt=0)
    exploration: float = Field(default=0.01, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _daily_optional_with_other_caps(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "daily_cap_usd" not in data
            and any(data.get(f) is not None for f in _CAP_FIELDS.values())
        ):
            return {**data, "daily_cap_usd": None}
        return data

    @model_validator(mode="after")
    def _some_cap(self) -> TenantConfig:
        if not self.caps_micros:
            raise ValueError(
                "set at least one of hourly_cap_usd, daily_cap_usd, weekly_cap_usd, monthly_cap_usd"
            )
        if self.max_request_usd is not None:
            smallest = min(self.caps_micros.values())
            if round(self.max_request_usd * MICROS_PER_USD) > smallest:
                raise ValueError("max_request_usd must not exceed the smallest window cap")
        return self

    @field_validator("api_key_sha256")
    @classmethod
    def _is_sha256(cls, v: str) -> str:
        if not _SHA256_HEX.match(v):
            raise ValueError(
                "must be 64 lowercase hex characters: the SHA-256 of the key "
                "(make one with `ttc-router config hash-key KEY`)"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from router.ledger.windows import zone

        try:
            zone(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return v

    def key_matches(self, key: str) -> bool:
        return hmac.compare_digest(self.api_key_sha256, hash_api_key(key))

    def allows(self, arm: str) -> bool:
        return "*" in self.allowed_arms or arm in self.allowed_arms

    @property
    def caps_micros(self) -> dict[str, int]:
        """Window name → cap in micro-dollars, for the windows that have a cap."""
        out: dict[str, int] = {}
        for window, name in _CAP_FIELDS.items():
            usd = getattr(self, name)
            if usd is not None:
                out[window] = round(usd * MICROS_PER_USD)
        return out

    @property
    def daily_cap_micros(self) -> int:
        """The daily cap, or 0 when the tenant has none."""
        return self.caps_micros.get("daily", 0)

    @property
    def max_request_micros(self) -> int | None:
        if self.max_request_usd is None:
            return None
        return round(self.max_request_usd * MICROS_PER_USD)


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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def watch_tenants_file(
    path: Path,
    apply: Callable[[TenantsConfig], None],
    *,
    interval_s: float = 1.0,
    on_error: Callable[[str], None] | None = None,
) -> None:
    """Poll ``path``'s mtime and size; on a change load it and call ``apply`` with it.

    An invalid file is reported to ``on_error`` (and logged) and the previous config stays in
    force; the file is loaded again at its next change. Runs until cancelled.
    """
    from router.config.loader import load_tenants

    seen = _stamp(path)
    while True:
        await asyncio.sleep(interval_s)
        now = _stamp(path)
        if now == seen or now is None:
            continue
        seen = now
        try:
            cfg = await asyncio.to_thread(load_tenants, path)
        except ConfigError as exc:
            log.error("kept the previous tenants: %s", exc.message)
            if on_error is not None:
                on_error(exc.message)
            continue
        apply(cfg)
        log.info("reloaded %s after it changed", path)

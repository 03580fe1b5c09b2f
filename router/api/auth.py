"""API-key authentication: the key in the call's metadata names the tenant."""

from __future__ import annotations

from collections.abc import Sequence

from router.config.tenants import TenantsConfig
from router.core.service import Tenant
from router.errors import Unauthenticated

API_KEY_HEADER = "x-api-key"


def api_key_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key == API_KEY_HEADER:
            return text.strip()
        if key == "authorization" and text.lower().startswith("bearer "):
            return text[7:].strip()
    return None


def authenticate(
    metadata: Sequence[tuple[str, str | bytes]] | None, tenants: TenantsConfig
) -> Tenant:
    key = api_key_from_metadata(metadata)
    if not key:
        raise Unauthenticated(
            f"no API key: send it in the '{API_KEY_HEADER}' metadata entry "
            "or as 'authorization: Bearer <key>'"
        )
    found = tenants.by_key(key)
    if found is None:
        raise Unauthenticated("the API key matches no tenant; check the key you were issued")
    return Tenant(found[0], found[1])

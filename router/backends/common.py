"""Small pieces every backend adapter needs: token estimates, short server messages, and
for the HTTP adapters the base URL, the pooled client and the API key."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from router.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import httpx

    from router.config.backends import TierConfig

CHARS_PER_TOKEN = 4
EXCERPT_CHARS = 200
CONNECT_TIMEOUT_S = 5.0


def estimate_tokens(text: str) -> int:
    """Rough token count (four characters a token) for a server that reports none."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A server message on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def base_url(endpoint: str) -> str:
    """The endpoint without a trailing ``/`` or ``/v1``; both spellings are accepted."""
    url = endpoint.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def http_endpoint(tier: str, endpoint: str, example: str) -> tuple[str, str]:
    """``(base URL, scheme://host:port)`` of an http(s) endpoint; the second, for messages,
    never carries credentials or a query. Anything else is a ``ConfigError``."""
    import httpx

    base = base_url(endpoint)
    try:
        url: httpx.URL | None = httpx.URL(base)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"tier {tier!r}: endpoint must be an http(s) URL such as {example!r}")
    port = f":{url.port}" if url.port else ""
    return base, f"{url.scheme}://{url.host}{port}"


def pooled_client(cfg: TierConfig) -> httpx.AsyncClient:
    """One connection pool per tier, sized by ``max_concurrency``."""
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=cfg.max_concurrency,
            max_keepalive_connections=cfg.max_concurrency,
        ),
        timeout=httpx.Timeout(cfg.timeout_s, connect=min(CONNECT_TIMEOUT_S, cfg.timeout_s)),
    )


def api_key(tier: str, env: str | None) -> str | None:
    """The key in environment variable ``env`` (read on every call, so a rotated key takes
    effect at once); None without ``env``; a ``BackendError`` when it is unset."""
    if not env:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise BackendError(f"tier {tier!r}: environment variable {env} (api_key_env) is not set")
    return key

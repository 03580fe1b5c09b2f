"""Build the backend a tier's ``protocol`` asks for, wrapped in retries and a circuit breaker."""

from __future__ import annotations

from router.config.backends import TierConfig
from router.core.protocols import Backend
from router.errors import ConfigError


def build_adapter(tier: str, cfg: TierConfig) -> Backend:
    """The bare adapter for ``cfg.protocol``: ``TritonBackend``, ``OpenAICompatibleBackend``
    or ``AnthropicBackend``, with no retries and no breaker."""
    if cfg.protocol == "triton":
        from router.backends.triton import TritonBackend

        return TritonBackend(tier, cfg, prompt_template=cfg.prompt_template)
    if cfg.protocol == "openai":
        from router.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(tier, cfg)
    if cfg.protocol == "anthropic":
        from router.backends.anthropic import AnthropicBackend

        return AnthropicBackend(tier, cfg)
    raise ConfigError(
        f"tier {tier!r}: unknown protocol {cfg.protocol!r} "
        "(expected 'triton', 'openai' or 'anthropic')"
    )


def build_backend(tier: str, cfg: TierConfig) -> Backend:
    """The adapter for ``cfg.protocol`` inside a ``ResilientBackend`` that applies the tier's
    ``retry`` and ``breaker`` settings (the adapter itself is its ``inner``)."""
    from router.backends.resilience import ResilientBackend

    return ResilientBackend(build_adapter(tier, cfg), cfg)

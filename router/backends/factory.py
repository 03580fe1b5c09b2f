"""Build the backend adapter a tier's ``protocol`` asks for."""

from __future__ import annotations

from router.config.backends import TierConfig
from router.core.protocols import Backend
from router.errors import ConfigError


def build_backend(tier: str, cfg: TierConfig) -> Backend:
    """The adapter for ``cfg.protocol``: ``TritonBackend`` or ``OpenAICompatibleBackend``."""
    if cfg.protocol == "triton":
        from router.backends.triton import TritonBackend

        return TritonBackend(tier, cfg, prompt_template=cfg.prompt_template)
    if cfg.protocol == "openai":
        from router.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(tier, cfg)
    raise ConfigError(
        f"tier {tier!r}: unknown protocol {cfg.protocol!r} (expected 'triton' or 'openai')"
    )

"""Model backend adapters, one per protocol, all implementing ``router.core.protocols.Backend``.

* ``TritonBackend``: Triton Inference Server with the vLLM backend's tensors, gRPC streaming;
* ``OpenAICompatibleBackend``: ``/v1/chat/completions`` with server-sent events;
* ``AnthropicBackend``: the Anthropic Messages API (``/v1/messages``) with server-sent events;
* ``ResilientBackend``: any of them with retries of retriable failures and a circuit breaker;
* ``build_backend(tier, cfg)``: the adapter for ``cfg.protocol``, wrapped in a
  ``ResilientBackend``; ``build_adapter`` gives the bare adapter.

``router.backends.demo`` holds simulated models behind real servers for demos and tests.
"""

from __future__ import annotations

from router.backends.anthropic import AnthropicBackend
from router.backends.factory import build_adapter, build_backend
from router.backends.openai_compatible import OpenAICompatibleBackend
from router.backends.resilience import ResilientBackend
from router.backends.triton import TritonBackend

__all__ = [
    "AnthropicBackend",
    "OpenAICompatibleBackend",
    "ResilientBackend",
    "TritonBackend",
    "build_adapter",
    "build_backend",
]

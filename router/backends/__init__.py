"""Model backend adapters, one per protocol, all implementing ``router.core.protocols.Backend``.

* ``TritonBackend``: Triton Inference Server with the vLLM backend's tensors, gRPC streaming;
* ``OpenAICompatibleBackend``: ``/v1/chat/completions`` with server-sent events;
* ``build_backend(tier, cfg)``: the adapter for ``cfg.protocol``.

``router.backends.demo`` holds simulated models behind real servers for demos and tests.
"""

from __future__ import annotations

from router.backends.factory import build_backend
from router.backends.openai_compatible import OpenAICompatibleBackend
from router.backends.triton import TritonBackend

__all__ = ["OpenAICompatibleBackend", "TritonBackend", "build_backend"]

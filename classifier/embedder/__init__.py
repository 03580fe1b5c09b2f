"""The prompt embedder: all-MiniLM-L6-v2 exported to ONNX, run with ONNX Runtime.

``BatchedEmbedder`` is the async ``Embedder`` the service uses; ``OnnxEmbedder`` the
synchronous batch API underneath; ``ensure_exported`` the cached export. Heavy libraries
(torch, transformers, onnxruntime, tokenizers) load only when a model is exported or opened.
"""

from classifier.embedder.batched import BatchedEmbedder
from classifier.embedder.export import EXPORT_FORMAT_VERSION, ensure_exported, export_embedder
from classifier.embedder.model_files import ModelFiles, default_cache_dir, locate_model
from classifier.embedder.runtime import OnnxEmbedder

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "BatchedEmbedder",
    "ModelFiles",
    "OnnxEmbedder",
    "default_cache_dir",
    "ensure_exported",
    "export_embedder",
    "locate_model",
]

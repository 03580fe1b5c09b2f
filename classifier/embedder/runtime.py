"""The prompt embedder on ONNX Runtime: tokenise, run the pooled graph, return unit vectors."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier.embedder.chunking import plan_runs
from classifier.embedder.export import INPUT_NAMES, OUTPUT_NAME, ensure_exported
from classifier.embedder.model_files import ModelFiles, locate_model
from classifier.embedder.tokens import PromptTokenizer, pad
from router.errors import ModelError


def _gpu_present() -> bool:
    """True when an NVIDIA device node exists (the CUDA provider is usable at all)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_providers() -> list[str]:
    """CUDA first only when the runtime has it and a GPU is there; CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and ort.get_device() == "GPU" and _gpu_present():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


class OnnxEmbedder:
    """Synchronous batch embedder; safe to call from one worker thread at a time or many."""

    def __init__(
        self, session: Any, tokenizer: PromptTokenizer, dim: int, model_path: Path
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._dim = dim
        self._model_path = model_path

    @classmethod
    def load(
        cls,
        cache_dir: Path | None = None,
        *,
        threads: int | None = None,
        quantized: bool = False,
        spin: bool = False,
        model_root: Path | None = None,
    ) -> OnnxEmbedder:
        """Export (once, cached) and open the embedder.

        ``threads`` caps ONNX Runtime's intra-op threads (default: one per core).
        ``quantized`` selects the int8 dynamic-quantised graph instead of the fp32 one.
        ``spin`` lets idle ONNX Runtime threads busy-wait: a little lower latency for lone
        prompts, but they then take CPU from the event loop and halve batched throughput
        on a 2-core machine, so it is off by default.
        """
        files = locate_model(model_root)
        path = ensure_exported(cache_dir, quantized=quantized, model_root=model_root)
        return cls.from_files(path, files, threads=threads, spin=spin)

    @classmethod
    def from_files(
        cls,
        onnx_path: Path,
        files: ModelFiles,
        *,
        threads: int | None = None,
        spin: bool = False,
    ) -> OnnxEmbedder:
        """Open an already exported graph with the tokenizer of ``files``."""
        import onnxruntime as ort

        if threads is not None and threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=choose_providers()
            )
        except Exception as exc:
            raise ModelError(f"cannot open the embedder graph {onnx_path}: {exc}") from exc
        names = {i.name for i in session.get_inputs()}
        if names != set(INPUT_NAMES):
            raise ModelError(f"embedder graph {onnx_path} takes {sorted(names)}, not {INPUT_NAMES}")
        outputs = session.get_outputs()
        dim = files.dim
        if [o.name for o in outputs] != [OUTPUT_NAME] or outputs[0].shape[-1] != dim:
            raise ModelError(f"embedder graph {onnx_path} does not output {OUTPUT_NAME}[*, {dim}]")
        return cls(session, PromptTokenizer.load(files), dim, onnx_path)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Tokens per prompt the model sees ([CLS] and [SEP] included); the rest is cut."""
        return self._tokenizer.max_tokens

    @property
    def model_path(self) -> Path:
        return self._model_path

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens in ``text`` without truncation or special tokens."""
        return self._tokenizer.count(text)

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length embeddings, shape (len(texts), dim), in the order given.

        Prompts run in groups of similar length (see ``chunking.plan_runs``), each padded
        to its longest prompt; padding never changes a prompt's vector.
        """
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        token_ids = self._tokenizer.token_ids(texts) if texts else []
        for run in plan_runs([len(ids) for ids in token_ids]):
            out[run] = self._run(*pad([token_ids[i] for i in run]))
        return out

    def _run(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[np.float32]:
        try:
            (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask})
        except Exception as exc:
            raise ModelError(f"the embedder failed on a run of {len(ids)} prompts: {exc}") from exc
        return np.asarray(out, dtype=np.float32)

"""Export all-MiniLM-L6-v2 with mean pooling and L2 normalisation to one ONNX graph.

Graph inputs: ``input_ids`` and ``attention_mask`` (int64, [batch, seq], both axes
dynamic). Output: ``embedding`` (float32, [batch, dim]), unit rows. Exports are cached
under a name that carries a digest of the weights and of ``EXPORT_FORMAT_VERSION``.

Run ``python -m classifier.embedder OUT.onnx [--int8]`` to write one by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from classifier.embedder.model_files import ModelFiles, default_cache_dir, locate_model
from classifier.embedder.tokens import PromptTokenizer
from router.errors import ModelError

if TYPE_CHECKING:
    import torch

# Bump when the graph's inputs, outputs or computation change: old cached files are ignored.
EXPORT_FORMAT_VERSION = 1
INT8_FORMAT_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
_OPSET = 17
# Cosine the exported graph must reach against the torch module it came from.
_EXPORT_CHECK_MIN_COSINE = 0.9999
_CHECK_TEXTS = (
    "hi",
    "What is the derivative of x^3 · sin(x)? Show the steps.",
    "def add(a, b):\n    return a + b  # 加法 🚀",
    "long prompt " * 400,
)


def cached_name(files: ModelFiles, *, quantized: bool = False) -> str:
    """File name of the cached export for these weights (and variant)."""
    h = hashlib.sha256(files.digest().encode())
    h.update(f"export-format-{EXPORT_FORMAT_VERSION}".encode())
    if quantized:
        h.update(f"int8-format-{INT8_FORMAT_VERSION}".encode())
    suffix = "-int8" if quantized else ""
    return f"embedder-{h.hexdigest()[:16]}{suffix}.onnx"


def ensure_exported(
    cache_dir: Path | None = None,
    *,
    quantized: bool = False,
    model_root: Path | None = None,
) -> Path:
    """Path of the cached ONNX embedder, exporting it first if it is not there yet.

    ``cache_dir`` defaults to ``$TTC_CACHE_DIR`` or ``~/.cache/ttc-router``. Files are
    written to a temporary name and renamed, so concurrent callers never see a partial file.
    """
    files = locate_model(model_root)
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    target = directory / cached_name(files, quantized=quantized)
    if target.is_file():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create the embedder cache folder {directory}: {exc}") from exc
    if quantized:
        source = ensure_exported(directory, model_root=model_root)
        with _atomic_target(target) as tmp:
            _quantize(source, tmp)
    else:
        with _atomic_target(target) as tmp:
            _export(files, tmp)
    return target


def export_embedder(out: Path, *, quantized: bool = False, model_root: Path | None = None) -> Path:
    """Write the ONNX embedder to ``out`` (fresh export, checked against torch) and return it."""
    files = locate_model(model_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    if quantized:
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            fp32 = Path(scratch) / "embedder.onnx"
            _export(files, fp32)
            with _atomic_target(out) as tmp:
                _quantize(fp32, tmp)
    else:
        with _atomic_target(out) as tmp:
            _export(files, tmp)
    return out


@contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed onto it when the block succeeds."""
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _pooled_module(files: ModelFiles) -> torch.nn.Module:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging
    files.check_mean_pooled_and_normalised()
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        bert = AutoModel.from_pretrained(
            str(files.root), attn_implementation="eager", local_files_only=True
        )
    except Exception as exc:
        raise ModelError(f"cannot load the embedder weights from {files.root}: {exc}") from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    bert.eval()

    class MeanPooledEncoder(torch.nn.Module):
        """BERT encoder → attention-masked mean over tokens → unit vector.

        The additive attention mask is built here rather than by ``BertModel.forward``,
        whose mask helpers branch on tensor values and do not trace.
        """

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            embedded = self.model.embeddings(
                input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)
            )
            keep = attention_mask.to(embedded.dtype)
            additive = (1.0 - keep[:, None, None, :]) * torch.finfo(embedded.dtype).min
            hidden = self.model.encoder(embedded, attention_mask=additive).last_hidden_state
            weights = keep.unsqueeze(-1)
            summed = (hidden * weights).sum(dim=1)
            mean = summed / weights.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return MeanPooledEncoder(bert).eval()


def _export(files: ModelFiles, out: Path) -> None:
    """Trace the pooled model to ``out`` and check ONNX Runtime reproduces torch on it."""
    import torch

    module = _pooled_module(files)
    tokenizer = PromptTokenizer.load(files)
    check_ids, check_mask = tokenizer.encode(_CHECK_TEXTS)
    sample_ids, sample_mask = tokenizer.encode(["export sample", "a"])
    with torch.inference_mode():
        expected = module(torch.from_numpy(check_ids), torch.from_numpy(check_mask)).numpy()
    dynamic = {0: "batch", 1: "sequence"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.from_numpy(sample_ids), torch.from_numpy(sample_mask)),
                str(out),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAMES[0]: dynamic,
                    INPUT_NAMES[1]: dynamic,
                    OUTPUT_NAME: {0: "batch"},
                },
                opset_version=_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ModelError(f"exporting the embedder to ONNX failed: {exc}") from exc
    got = _run_onnx(out, check_ids, check_mask)
    worst = float(np.min(np.sum(got * expected, axis=1)))
    if worst < _EXPORT_CHECK_MIN_COSINE:
        raise ModelError(
            f"the exported embedder disagrees with torch (cosine {worst:.5f} < "
            f"{_EXPORT_CHECK_MIN_COSINE}); the export is not usable"
        )


def _run_onnx(path: Path, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> NDArray[np.float32]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask})
    except Exception as exc:
        raise ModelError(f"the exported embedder {path} does not run: {exc}") from exc
    return np.asarray(out, dtype=np.float32)


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(source: Path, out: Path) -> None:
    """Dynamic int8 quantisation of ``source``.

    Only weight matrices are quantised, per output channel; activation × activation
    products (attention scores) stay float. Per-tensor scales cost far more accuracy here
    (cosine 0.60 against 0.98 on long prompts).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint_filter = _DropPreprocessingHint()
    root_logger = logging.getLogger()
    root_logger.addFilter(hint_filter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(source),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"MatMulConstBOnly": True},
            )
    except Exception as exc:
        raise ModelError(f"quantising the embedder {source} failed: {exc}") from exc
    finally:
        root_logger.removeFilter(hint_filter)

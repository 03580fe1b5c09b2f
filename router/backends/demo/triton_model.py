"""A simulated local 7B model served by a real Triton server through PyTriton (demo only).

The model is a simulation (``answers.simulate``), not a language model, but its Triton
interface copies the vLLM backend's: a decoupled model with ``max_batch_size: 0`` and

* inputs ``text_input`` (BYTES [1]); optional ``stream``, ``exclude_input_in_output``,
  ``return_finish_reason``, ``return_num_input_tokens``, ``return_num_output_tokens``
  (BOOL [1]) and ``sampling_parameters`` (BYTES [1], JSON; ``max_tokens`` defaults to 16 as
  in vLLM, ``n`` must be 1);
* outputs ``text_output`` (BYTES [-1]), ``finish_reason`` (BYTES [-1]),
  ``num_input_tokens`` (UINT32 [1]) and ``num_output_tokens`` (UINT32 [-1]), the extra
  outputs sent only when asked for.

Streaming sends one response per token (its text delta and ``num_output_tokens`` = 1).
Unlike vLLM, PyTriton signals the end of a stream with a separate empty final response, so
clients must ask for empty final responses. For tests, a prompt containing
``answers.FAULT_MID_STREAM`` fails after a few tokens and one containing
``answers.FAULT_UNAVAILABLE`` fails at once.

Run: ``python -m router.backends.demo.triton_model --grpc-port P --http-port H
--metrics-port M [--model-name demo-7b] [--token-delay-ms X]``; it serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from router.backends.demo.answers import (
    DEMO_TRITON_MODEL,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    FAULT_UNAVAILABLE,
    DemoModel,
    count_tokens,
    simulate,
)

log = logging.getLogger("router.backends.demo.triton_model")

_SAMPLING_KEYS = frozenset(
    {
        "max_tokens",
        "min_tokens",
        "temperature",
        "seed",
        "top_p",
        "top_k",
        "min_p",
        "n",
        "best_of",
        "stop",
        "ignore_eos",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "skip_special_tokens",
        "logprobs",
    }
)
_VLLM_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class _Job:
    prompt: str
    stream: bool
    prepend_input: bool
    max_tokens: int
    temperature: float
    seed: int
    want_finish_reason: bool
    want_input_tokens: bool
    want_output_tokens: bool


def _flag(request: Any, name: str) -> bool | None:
    if name not in request.data:
        return None
    return bool(np.asarray(request.data[name]).reshape(-1)[0])


def _text(request: Any, name: str) -> str | None:
    if name not in request.data:
        return None
    value = np.asarray(request.data[name]).reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_request(request: Any) -> _Job:
    """Read one request's tensors the way the vLLM backend does; raise ``ValueError`` if bad."""
    prompt = _text(request, "text_input")
    if prompt is None:
        raise ValueError("input 'text_input' is required")
    stream = bool(_flag(request, "stream"))
    exclude = _flag(request, "exclude_input_in_output")
    prepend = (not exclude) if exclude is not None else not stream
    if prepend and stream:
        raise ValueError("When streaming, `exclude_input_in_output` = False is not allowed.")
    raw = _text(request, "sampling_parameters") or "{}"
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("sampling_parameters must be a JSON object")
    unknown = sorted(set(params) - _SAMPLING_KEYS)
    if unknown:
        raise ValueError(f"unexpected sampling parameters: {', '.join(unknown)}")
    if int(params.get("n", 1)) != 1:
        raise ValueError("the simulated model supports n=1 only")
    max_tokens = int(params.get("max_tokens", _VLLM_DEFAULT_MAX_TOKENS))
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    return _Job(
        prompt=prompt,
        stream=stream,
        prepend_input=prepend,
        max_tokens=max_tokens,
        temperature=float(params.get("temperature", 1.0)),
        seed=int(params.get("seed") or 0),
        want_finish_reason=bool(_flag(request, "return_finish_reason")),
        want_input_tokens=bool(_flag(request, "return_num_input_tokens")),
        want_output_tokens=bool(_flag(request, "return_num_output_tokens")),
    )


def _response(job: _Job, text: str, n_in: int, n_out: int, finish: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"text_output": np.array([text.encode("utf-8")], dtype=np.object_)}
    if job.want_finish_reason:
        out["finish_reason"] = np.array([str(finish).encode("utf-8")], dtype=np.object_)
    if job.want_input_tokens:
        out["num_input_tokens"] = np.array([n_in], dtype=np.uint32)
    if job.want_output_tokens:
        out["num_output_tokens"] = np.array([n_out], dtype=np.uint32)
    return out


def _responses(job: _Job, model: DemoModel) -> list[dict[str, Any]]:
    """Every response the model sends for ``job``, in order (one per token when streaming)."""
    answer = simulate(job.prompt, skill=model.skill, seed=job.seed, temperature=job.temperature)
    tokens, finish = answer.limited(job.max_tokens)
    n_in = count_tokens(job.prompt)
    if not job.stream:
        text = (job.prompt if job.prepend_input else "") + "".join(tokens)
        return [_response(job, text, n_in, len(tokens), finish)]
    last = len(tokens) - 1
    return [
        _response(job, tok, n_in, 1, finish if i == last else None) for i, tok in enumerate(tokens)
    ]


class SimulatedVllmModel:
    """PyTriton inference callable: streams simulated answers with per-token latency."""

    def __init__(self, model: DemoModel, *, token_delay_s: float) -> None:
        self._model = model
        self._token_delay_s = token_delay_s

    async def __call__(self, requests: list[Any]) -> AsyncIterator[list[dict[str, Any]]]:
        jobs = [parse_request(r) for r in requests]
        if any(FAULT_UNAVAILABLE in job.prompt for job in jobs):
            raise RuntimeError("simulated engine unavailable (fault requested by the prompt)")
        streams = [_responses(job, self._model) for job in jobs]
        fail = any(FAULT_MID_STREAM in job.prompt for job in jobs)
        if fail:
            streams = [s[:FAULT_AFTER_TOKENS] for s in streams]
        await asyncio.sleep(self._model.first_token_ms / 1000.0)
        for step in range(max(len(s) for s in streams)):
            if step:
                await asyncio.sleep(self._token_delay_s)
            yield [
                s[step] if step < len(s) else _response(job, "", 0, 0, None)
                for job, s in zip(jobs, streams, strict=True)
            ]
        if fail:
            raise RuntimeError(
                f"simulated engine failure after {FAULT_AFTER_TOKENS} tokens "
                "(fault requested by the prompt)"
            )


def prepare_environment() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH for Triton's Python stub.

    PyTriton's stub otherwise links the system libpython, and model start-up fails.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        current = os.environ.get("LD_LIBRARY_PATH", "")
        paths = [p for p in current.split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def _tensors() -> tuple[list[Any], list[Any]]:
    from pytriton.model_config import Tensor

    inputs = [
        Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
        Tensor(name="stream", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="sampling_parameters", dtype=np.bytes_, shape=(1,), optional=True),
        Tensor(name="exclude_input_in_output", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="return_finish_reason", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="return_num_input_tokens", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="return_num_output_tokens", dtype=np.bool_, shape=(1,), optional=True),
    ]
    outputs = [
        Tensor(name="text_output", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="finish_reason", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="num_input_tokens", dtype=np.uint32, shape=(1,)),
        Tensor(name="num_output_tokens", dtype=np.uint32, shape=(-1,)),
    ]
    return inputs, outputs


def serve(
    *,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    model_name: str = DEMO_TRITON_MODEL.name,
    token_delay_ms: float | None = None,
    exit_timeout_s: int = 1,
    stop: threading.Event | None = None,
) -> int:
    """Start Triton on 127.0.0.1 with the simulated model; block until ``stop`` is set."""
    prepare_environment()
    from pytriton.model_config import ModelConfig
    from pytriton.triton import Triton, TritonConfig

    model = DemoModel(
        name=model_name,
        skill=DEMO_TRITON_MODEL.skill,
        first_token_ms=DEMO_TRITON_MODEL.first_token_ms,
        per_token_ms=DEMO_TRITON_MODEL.per_token_ms if token_delay_ms is None else token_delay_ms,
    )
    delay_s = model.per_token_ms / 1000.0
    stop = stop or threading.Event()
    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        metrics_address="127.0.0.1",
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        exit_timeout_secs=exit_timeout_s,
        log_verbose=0,
    )
    inputs, outputs = _tensors()
    model_config = ModelConfig(batching=False, decoupled=True)
    started = time.monotonic()
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=model_name,
            infer_func=SimulatedVllmModel(model, token_delay_s=delay_s),
            inputs=inputs,
            outputs=outputs,
            config=model_config,
        )
        triton.run()
        print(
            f"demo triton ready: model={model_name} grpc=127.0.0.1:{grpc_port} "
            f"http=127.0.0.1:{http_port} started_in={time.monotonic() - started:.2f}s",
            flush=True,
        )
        while not stop.wait(0.5):
            if not triton.is_alive():
                log.error("Triton server or model proxy died")
                return 1
        return 0
    finally:
        triton.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.backends.demo.triton_model",
        description="Serve the simulated (demo) 7B model on a real Triton server via PyTriton.",
    )
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--model-name", default=DEMO_TRITON_MODEL.name)
    parser.add_argument("--token-delay-ms", type=float, default=None, help="latency per token")
    parser.add_argument(
        "--exit-timeout-s", type=int, default=1, help="seconds to wait for in-flight requests"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return serve(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        model_name=args.model_name,
        token_delay_ms=args.token_delay_ms,
        exit_timeout_s=args.exit_timeout_s,
        stop=stop,
    )


if __name__ == "__main__":
    sys.exit(main())

"""A simulated local 7B model served by a real Triton server through PyTriton (demo only).

The model is a simulation (``answers.generate``), not a language model. It is served twice,
with the two Triton interfaces ``TritonBackend`` speaks:

``demo-7b`` copies the vLLM backend: a decoupled model with ``max_batch_size: 0`` and

* inputs ``text_input`` (BYTES [1]); optional ``stream``, ``exclude_input_in_output``,
  ``return_finish_reason``, ``return_num_input_tokens``, ``return_num_output_tokens``,
  ``return_logprobs``, ``return_cumulative_logprob`` (BOOL [1]) and ``sampling_parameters``
  (BYTES [1], JSON; ``max_tokens`` defaults to 16 as in vLLM, ``n`` must be 1, ``stop`` is a
  string or a list of strings left out of the text, ``logprobs`` must be set for
  ``return_logprobs`` to give anything but ``null``);
* outputs ``text_output`` (BYTES [-1]), ``finish_reason`` (BYTES [-1]),
  ``num_input_tokens`` (UINT32 [1]), ``num_output_tokens`` (UINT32 [-1]), ``logprobs``
  (BYTES [-1]: per response, a JSON list with one ``{token_id: {"logprob", "rank",
  "decoded_token"}}`` object per new token) and ``cumulative_logprob`` (FP32 [-1]), the extra
  outputs sent only when asked for.

``demo-7b-trtllm`` copies TensorRT-LLM's ``ensemble``: decoupled, ``max_batch_size`` > 0 (so
every tensor has a leading batch dimension of 1), inputs ``text_input`` (BYTES [1]),
``max_tokens`` (INT32 [1]), optional ``stream``, ``return_log_probs`` (BOOL [1]),
``temperature``, ``top_p`` (FP32 [1]), ``random_seed`` (UINT64 [1]), ``stop_words`` and
``bad_words`` (BYTES [-1]), ``beam_width`` (INT32 [1], must be 1); outputs ``text_output``
(BYTES [-1]), ``cum_log_probs`` (FP32 [-1]) and ``output_log_probs`` (FP32 [-1, -1]). Like
the real ensemble it reports no token counts and no finish reason, and a stop word stays in
the text.

Both stream one response per token. Unlike vLLM, PyTriton signals the end of a stream with a
separate empty final response, so clients must ask for empty final responses. An assistant
prefix appended to the prompt is recognised by ``answers.split_continuation``.

For tests, the prompt markers of ``answers`` apply: ``[demo-fault:mid-stream]`` fails after
a few tokens; ``[demo-fault:unavailable]``, ``[demo-fault:http-5xx]``, ``[demo-fault:http-429]``
and the first requests of ``[demo-fault:flaky-N]`` fail at once as an engine error,
``[demo-fault:http-4xx]`` as a rejected request (``ValueError``); ``[demo-fault:slow]`` and
``@slow`` scripted samples stream slowly.

``serve`` also binds the demo scorers (``scorer_model.bind_scorer_models``).

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
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from router.backends.demo.answers import (
    DEMO_TRITON_MODEL,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    FAULT_SLOW,
    FAULT_UNAVAILABLE,
    SLOW_FAULT_TOKEN_S,
    SLOW_SAMPLE_FACTOR,
    DemoModel,
    Generation,
    count_tokens,
    fault_http_status,
    flaky_failures,
    generate,
    split_continuation,
)

log = logging.getLogger("router.backends.demo.triton_model")

TRTLLM_SUFFIX = "-trtllm"
"""The TensorRT-LLM-interface model is served as ``<model name>-trtllm``."""

TRTLLM_MAX_BATCH = 8

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
_VOCAB = 32000


@dataclass(frozen=True)
class _Job:
    """One request, read from either interface's tensors."""

    text: str
    stream: bool
    max_tokens: int
    temperature: float
    seed: int
    stop: tuple[str, ...] = ()
    prepend_input: bool = False
    want_finish_reason: bool = False
    want_input_tokens: bool = False
    want_output_tokens: bool = False
    want_logprobs: bool = False
    logprobs_asked: bool = False
    want_cumulative: bool = False


@dataclass
class _Plan:
    """The responses of one job and the pause before each."""

    responses: list[dict[str, Any]]
    delays: list[float]
    fail_after: bool = False


def _flag(request: Any, name: str) -> bool | None:
    if name not in request.data:
        return None
    return bool(np.asarray(request.data[name]).reshape(-1)[0])


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _text(request: Any, name: str) -> str | None:
    if name not in request.data:
        return None
    return _decode(np.asarray(request.data[name]).reshape(-1)[0])


def _number(request: Any, name: str) -> float | None:
    if name not in request.data:
        return None
    return float(np.asarray(request.data[name]).reshape(-1)[0])


def _stop_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise ValueError("stop must be a string or a list of strings")


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
        text=prompt,
        stream=stream,
        prepend_input=prepend,
        max_tokens=max_tokens,
        temperature=float(params.get("temperature", 1.0)),
        seed=int(params.get("seed") or 0),
        stop=_stop_list(params.get("stop")),
        want_finish_reason=bool(_flag(request, "return_finish_reason")),
        want_input_tokens=bool(_flag(request, "return_num_input_tokens")),
        want_output_tokens=bool(_flag(request, "return_num_output_tokens")),
        want_logprobs=bool(_flag(request, "return_logprobs")),
        logprobs_asked=params.get("logprobs") is not None,
        want_cumulative=bool(_flag(request, "return_cumulative_logprob")),
    )


def parse_trtllm_request(request: Any) -> _Job:
    """Read one request's tensors the way TensorRT-LLM's ensemble does."""
    prompt = _text(request, "text_input")
    if prompt is None:
        raise ValueError("input 'text_input' is required")
    max_tokens = _number(request, "max_tokens")
    if max_tokens is None:
        raise ValueError("input 'max_tokens' is required")
    if int(max_tokens) < 1:
        raise ValueError(f"max_tokens must be at least 1, got {int(max_tokens)}")
    beam = _number(request, "beam_width")
    if beam is not None and int(beam) != 1:
        raise ValueError("the simulated model supports beam_width=1 only")
    stop: tuple[str, ...] = ()
    if "stop_words" in request.data:
        stop = tuple(_decode(w) for w in np.asarray(request.data["stop_words"]).reshape(-1))
    return _Job(
        text=prompt,
        stream=bool(_flag(request, "stream")),
        max_tokens=int(max_tokens),
        temperature=_number(request, "temperature") or 0.0,
        seed=int(_number(request, "random_seed") or 0),
        stop=tuple(s for s in stop if s),
        want_logprobs=bool(_flag(request, "return_log_probs")),
    )


def _token_id(token: str) -> str:
    return str(sum(token.encode("utf-8")) * 131 % _VOCAB)


class _SimulatedModel:
    """The shared part of both interfaces: faults, pacing, the streaming loop."""

    include_stop = False
    """Whether a stop string stays in the text (TensorRT-LLM) or is left out (vLLM)."""

    def __init__(self, model: DemoModel, *, token_delay_s: float) -> None:
        self._model = model
        self._token_delay_s = token_delay_s
        self._seen: Counter[str] = Counter()

    def _parse(self, request: Any) -> _Job:
        raise NotImplementedError

    def _plan(self, job: _Job, gen: Generation, n_in: int) -> _Plan:
        raise NotImplementedError

    def _fault(self, job: _Job) -> None:
        """Raise the failure the prompt's fault marker asks for, before any token."""
        if FAULT_UNAVAILABLE in job.text:
            raise RuntimeError("simulated engine unavailable (fault requested by the prompt)")
        status = fault_http_status(job.text)
        if status is not None and 400 <= status < 500 and status != 429:
            raise ValueError(f"simulated invalid request (HTTP {status} requested by the prompt)")
        if status is not None:
            raise RuntimeError(f"simulated engine failure (HTTP {status} requested by the prompt)")
        flaky = flaky_failures(job.text)
        if flaky:
            self._seen[job.text] += 1
            attempt = self._seen[job.text]
            if attempt <= flaky:
                raise RuntimeError(
                    f"simulated transient engine failure (attempt {attempt} of {flaky} that fail)"
                )

    def _generation(self, job: _Job) -> tuple[Generation, int]:
        prompt, prefix = split_continuation(
            job.text, skill=self._model.skill, seed=job.seed, temperature=job.temperature
        )
        gen = generate(
            prompt,
            skill=self._model.skill,
            seed=job.seed,
            temperature=job.temperature,
            max_tokens=job.max_tokens,
            stop=job.stop,
            include_stop=self.include_stop,
            continuation=prefix,
        )
        return gen, count_tokens(job.text)

    def _delays(self, job: _Job, gen: Generation, steps: int) -> list[float]:
        per_token = self._token_delay_s * (SLOW_SAMPLE_FACTOR if gen.slow else 1.0)
        delays = [self._model.first_token_ms / 1000.0]
        for step in range(1, steps):
            slow = FAULT_SLOW in job.text and step >= FAULT_AFTER_TOKENS
            delays.append(SLOW_FAULT_TOKEN_S if slow else per_token)
        return delays

    async def __call__(self, requests: list[Any]) -> AsyncIterator[list[dict[str, Any]]]:
        jobs = [self._parse(r) for r in requests]
        for job in jobs:
            self._fault(job)
        plans = [self._plan(job, *self._generation(job)) for job in jobs]
        fail = any(p.fail_after for p in plans)
        steps = max(len(p.responses) for p in plans)
        for step in range(steps):
            pause = max(p.delays[step] for p in plans if step < len(p.delays))
            await asyncio.sleep(pause)
            yield [
                p.responses[step] if step < len(p.responses) else self._empty(job)
                for job, p in zip(jobs, plans, strict=True)
            ]
        if fail:
            raise RuntimeError(
                f"simulated engine failure after {FAULT_AFTER_TOKENS} tokens "
                "(fault requested by the prompt)"
            )

    def _empty(self, job: _Job) -> dict[str, Any]:
        raise NotImplementedError

    def _finish_plan(self, job: _Job, gen: Generation, responses: list[dict[str, Any]]) -> _Plan:
        fail = FAULT_MID_STREAM in job.text
        if fail:
            responses = responses[:FAULT_AFTER_TOKENS]
        return _Plan(responses, self._delays(job, gen, len(responses)), fail_after=fail)


class SimulatedVllmModel(_SimulatedModel):
    """PyTriton inference callable with the vLLM backend's tensors."""

    def _parse(self, request: Any) -> _Job:
        return parse_request(request)

    def _response(
        self,
        job: _Job,
        text: str,
        n_in: int,
        n_out: int,
        finish: str | None,
        logprobs: Sequence[tuple[str, float]] = (),
        cumulative: float = 0.0,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"text_output": np.array([text.encode("utf-8")], dtype=np.object_)}
        if job.want_finish_reason:
            out["finish_reason"] = np.array([str(finish).encode("utf-8")], dtype=np.object_)
        if job.want_input_tokens:
            out["num_input_tokens"] = np.array([n_in], dtype=np.uint32)
        if job.want_output_tokens:
            out["num_output_tokens"] = np.array([n_out], dtype=np.uint32)
        if job.want_logprobs:
            payload = (
                [
                    {_token_id(tok): {"logprob": lp, "rank": 1, "decoded_token": tok}}
                    for tok, lp in logprobs
                ]
                if job.logprobs_asked
                else None
            )
            out["logprobs"] = np.array([json.dumps(payload).encode("utf-8")], dtype=np.object_)
        if job.want_cumulative:
            out["cumulative_logprob"] = np.array([cumulative], dtype=np.float32)
        return out

    def _empty(self, job: _Job) -> dict[str, Any]:
        return self._response(job, "", 0, 0, None)

    def _plan(self, job: _Job, gen: Generation, n_in: int) -> _Plan:
        pairs = list(zip(gen.pieces, gen.logprobs, strict=True))
        if not job.stream:
            text = (job.text if job.prepend_input else "") + gen.text
            return self._finish_plan(
                job,
                gen,
                [
                    self._response(
                        job, text, n_in, gen.output_tokens, gen.finish, pairs, sum(gen.logprobs)
                    )
                ],
            )
        last = len(pairs) - 1
        responses = []
        total = 0.0
        for i, (tok, lp) in enumerate(pairs):
            total += lp
            finish = gen.finish if i == last else None
            responses.append(self._response(job, tok, n_in, 1, finish, [(tok, lp)], total))
        return self._finish_plan(job, gen, responses)


class SimulatedTrtllmModel(_SimulatedModel):
    """PyTriton inference callable with TensorRT-LLM's ensemble tensors (batch dimension 1)."""

    include_stop = True

    def _parse(self, request: Any) -> _Job:
        return parse_trtllm_request(request)

    @staticmethod
    def _response(text: str, logprobs: Sequence[float], cumulative: float) -> dict[str, Any]:
        return {
            "text_output": np.array([[text.encode("utf-8")]], dtype=np.object_),
            "cum_log_probs": np.array([[cumulative]], dtype=np.float32),
            "output_log_probs": np.array([[list(logprobs)]], dtype=np.float32).reshape(
                1, 1, len(logprobs)
            ),
        }

    def _empty(self, job: _Job) -> dict[str, Any]:
        return self._response("", [], 0.0)

    def _plan(self, job: _Job, gen: Generation, n_in: int) -> _Plan:
        if not job.stream:
            return self._finish_plan(
                job, gen, [self._response(gen.text, gen.logprobs, sum(gen.logprobs))]
            )
        responses = []
        total = 0.0
        for tok, lp in zip(gen.pieces, gen.logprobs, strict=True):
            total += lp
            responses.append(self._response(tok, [lp], total))
        return self._finish_plan(job, gen, responses)


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

    flags = (
        "stream",
        "exclude_input_in_output",
        "return_finish_reason",
        "return_num_input_tokens",
        "return_num_output_tokens",
        "return_logprobs",
        "return_cumulative_logprob",
    )
    inputs = [
        Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
        Tensor(name="sampling_parameters", dtype=np.bytes_, shape=(1,), optional=True),
        *(Tensor(name=f, dtype=np.bool_, shape=(1,), optional=True) for f in flags),
    ]
    outputs = [
        Tensor(name="text_output", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="finish_reason", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="num_input_tokens", dtype=np.uint32, shape=(1,)),
        Tensor(name="num_output_tokens", dtype=np.uint32, shape=(-1,)),
        Tensor(name="logprobs", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="cumulative_logprob", dtype=np.float32, shape=(-1,)),
    ]
    return inputs, outputs


def _trtllm_tensors() -> tuple[list[Any], list[Any]]:
    from pytriton.model_config import Tensor

    inputs = [
        Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
        Tensor(name="max_tokens", dtype=np.int32, shape=(1,)),
        Tensor(name="stream", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="return_log_probs", dtype=np.bool_, shape=(1,), optional=True),
        Tensor(name="temperature", dtype=np.float32, shape=(1,), optional=True),
        Tensor(name="top_p", dtype=np.float32, shape=(1,), optional=True),
        Tensor(name="random_seed", dtype=np.uint64, shape=(1,), optional=True),
        Tensor(name="stop_words", dtype=np.bytes_, shape=(-1,), optional=True),
        Tensor(name="bad_words", dtype=np.bytes_, shape=(-1,), optional=True),
        Tensor(name="beam_width", dtype=np.int32, shape=(1,), optional=True),
    ]
    outputs = [
        Tensor(name="text_output", dtype=np.bytes_, shape=(-1,)),
        Tensor(name="cum_log_probs", dtype=np.float32, shape=(-1,)),
        Tensor(name="output_log_probs", dtype=np.float32, shape=(-1, -1)),
    ]
    return inputs, outputs


def _bind_scorers(triton: Any) -> None:
    from router.backends.demo.scorer_model import bind_scorer_models

    bind_scorer_models(triton)


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
    """Start Triton on 127.0.0.1 with the simulated model (``model_name`` with the vLLM
    interface, ``model_name + TRTLLM_SUFFIX`` with TensorRT-LLM's) and the demo scorers;
    block until ``stop`` is set."""
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
    started = time.monotonic()
    triton = Triton(config=config)
    try:
        inputs, outputs = _tensors()
        triton.bind(
            model_name=model_name,
            infer_func=SimulatedVllmModel(model, token_delay_s=delay_s),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(batching=False, decoupled=True),
        )
        inputs, outputs = _trtllm_tensors()
        triton.bind(
            model_name=model_name + TRTLLM_SUFFIX,
            infer_func=SimulatedTrtllmModel(model, token_delay_s=delay_s),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(batching=True, max_batch_size=TRTLLM_MAX_BATCH, decoupled=True),
        )
        _bind_scorers(triton)
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

"""Backend adapter for NVIDIA Triton serving an LLM with the vLLM or TensorRT-LLM backend.

Both interfaces stream over Triton's gRPC API (``ModelStreamInfer``) from a decoupled model.
``TierConfig.interface`` picks the tensors:

``vllm`` (the vLLM backend): inputs ``text_input`` (BYTES [1]), ``stream``,
``exclude_input_in_output``, ``return_num_input_tokens``, ``return_num_output_tokens``,
``return_finish_reason`` (BOOL [1]) and ``sampling_parameters`` (BYTES [1], JSON with
``max_tokens``, ``temperature``, ``seed``, ``stop`` and, when log-probabilities are asked
for, ``logprobs: 0``, which with ``return_logprobs``/``return_cumulative_logprob`` returns
the sampled tokens' log-probabilities). Outputs ``text_output`` (a delta per response),
``num_input_tokens``, ``num_output_tokens`` (tokens added by that response),
``finish_reason``, ``logprobs`` (JSON, one ``{token_id: {"logprob": …}}`` per new token) and
``cumulative_logprob``.

``trtllm`` (TensorRT-LLM's ``ensemble`` model, which batches, so every tensor has a leading
batch dimension of 1): inputs ``text_input`` (BYTES [1,1]), ``max_tokens`` (INT32 [1,1]),
``stream`` (BOOL [1,1]), ``temperature`` (FP32 [1,1]), ``random_seed`` (UINT64 [1,1]),
``stop_words`` (BYTES [1,N]) and ``return_log_probs`` (BOOL [1,1]); outputs ``text_output``
(a delta per response), ``cum_log_probs`` and ``output_log_probs``. The ensemble reports
no token counts and no finish reason, and keeps a stop word in its output.

Stop strings are also applied here, to the streamed text: the text ends before the first
one whichever backend produced it, and the request is cancelled once it is seen.

The model is decoupled, so the request asks for an empty final response
(``triton_enable_empty_final_response``) and responses are read until one carries the
``triton_final_response`` flag. ``tritonclient.grpc.aio`` refuses request parameters with
the reserved ``triton_`` prefix, so the adapter sends the protobuf messages from
``tritonclient.grpc.service_pb2`` itself over a ``grpc.aio`` channel and decodes outputs with
``tritonclient.grpc.InferResult``. ``tritonclient`` and ``grpc`` are imported on first use.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import re
import struct
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.backends.common import estimate_tokens, excerpt
from router.backends.limits import CallLimits
from router.config.backends import TierConfig
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout, ConfigError

if TYPE_CHECKING:
    import grpc.aio

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
_FINAL = "triton_final_response"

_REJECTED = re.compile(
    r"unknown model|not found|unexpected inference input|expected number of inputs|"
    r"unexpected shape|unexpected (?:data ?type|datatype)|invalid argument|\binvalid\b|"
    r"is required|not supported|unsupported|ValueError|TypeError|KeyError",
    re.I,
)
"""Model errors that describe a request the server rejects: sending it again fails again."""

_RETRIABLE_CODES = frozenset(
    {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN"}
)


def _excerpt(text: str) -> str:
    """A short one-line form of a server message; a Python traceback becomes its last line."""
    if "Traceback (most recent call last)" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else text
    return excerpt(text)


def _bytes_elements(values: Iterable[str]) -> bytes:
    """A Triton BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    out = b""
    for value in values:
        raw = value.encode("utf-8")
        out += struct.pack("<I", len(raw)) + raw
    return out


def _grpc_target(endpoint: str) -> str:
    return endpoint.split("://", 1)[1].rstrip("/") if "://" in endpoint else endpoint


class StopScanner:
    """Cuts streamed text before the first of some stop strings.

    ``feed`` returns the text that is safe to pass on: it holds back a tail that could be the
    start of a stop string until the next chunk decides it. After a stop string is seen,
    ``hit`` is True and nothing more is passed on.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.hit = False

    def feed(self, chunk: str) -> str:
        if self.hit:
            return ""
        if not self._stops:
            return chunk
        text = self._pending + chunk
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self.hit = True
            self._pending = ""
            return text[: min(found)]
        keep = 0
        for k in range(min(len(text), self._longest - 1), 0, -1):
            if any(s.startswith(text[-k:]) for s in self._stops):
                keep = k
                break
        self._pending = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is still held back, once the stream has ended without a stop string."""
        rest, self._pending = ("" if self.hit else self._pending), ""
        return rest


@dataclass(frozen=True)
class _Outputs:
    """What one streamed response carries, in either interface."""

    text: bytes
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish: str | None = None
    logprobs: tuple[float, ...] = ()
    cumulative_logprob: float | None = None


@dataclass
class _Progress:
    """What a stream has produced so far."""

    steps: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish: str | None = None
    logprobs: list[float] = field(default_factory=list)
    cumulative_logprob: float | None = None

    def add(self, out: _Outputs) -> None:
        self.steps += 1
        if out.input_tokens is not None:
            self.input_tokens = out.input_tokens
        if out.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + out.output_tokens
        self.finish = out.finish or self.finish
        self.logprobs.extend(out.logprobs)
        if out.cumulative_logprob is not None:
            self.cumulative_logprob = out.cumulative_logprob

    @property
    def tokens_so_far(self) -> int:
        """Output tokens produced: as reported, else one per streamed response."""
        return self.output_tokens if self.output_tokens is not None else self.steps


def _flat_floats(array: Any) -> tuple[float, ...]:
    if array is None:
        return ()
    flat = array.reshape(-1)
    if flat.dtype.kind in ("O", "S", "U"):
        values = []
        for v in flat:
            try:
                values.append(float(bytes(v).decode() if isinstance(v, bytes) else v))
            except ValueError:
                continue
        return tuple(values)
    return tuple(float(v) for v in flat)


def _vllm_logprobs(array: Any) -> tuple[float, ...]:
    """The sampled tokens' log-probabilities from the vLLM backend's ``logprobs`` output."""
    if array is None:
        return ()
    values: list[float] = []
    for element in array.reshape(-1):
        raw = bytes(element).decode("utf-8", "replace")
        entries = json.loads(raw)
        if not isinstance(entries, list):
            continue  # "null": the sampling parameters asked for none
        for position in entries:
            if isinstance(position, dict) and position:
                first = next(iter(position.values()))
                if isinstance(first, dict) and isinstance(first.get("logprob"), int | float):
                    values.append(float(first["logprob"]))
    return tuple(values)


class TritonBackend:
    """One tier served by Triton with the vLLM backend or a TensorRT-LLM ensemble
    (``protocol: triton``, ``interface: vllm | trtllm``).

    ``cfg.endpoint`` is Triton's gRPC ``host:port``, ``cfg.model`` the Triton model name.
    ``prompt_template`` wraps the prompt before it is sent (neither backend applies a chat
    template); ``"{prompt}"`` is replaced by the prompt text, and a request's
    ``continuation`` (an assistant prefix) is appended right after it. The returned text is
    only what the model adds.

    Token counts are the ones Triton reports (``num_input_tokens``; the sum of the
    per-response ``num_output_tokens``). When the server reports none (TensorRT-LLM's
    ensemble never does) the result says ``usage_estimated``: input tokens are estimated at
    four characters a token, output tokens as one per streamed response (both backends
    stream one response per generated token).

    One sample per request (``max_n`` is 1). Errors: connection refused, UNAVAILABLE and
    engine failures are retriable ``BackendError``; an unknown model or a rejected request
    is not; a failure after output started carries ``partial_output_tokens``.
    """

    def __init__(self, tier: str, cfg: TierConfig, *, prompt_template: str = "{prompt}") -> None:
        if cfg.protocol != "triton":
            raise ConfigError(
                f"tier {tier!r}: TritonBackend needs protocol 'triton', not {cfg.protocol!r}"
            )
        if "{prompt}" not in prompt_template:
            raise ConfigError(f"tier {tier!r}: prompt_template must contain '{{prompt}}'")
        self._tier = tier
        self._cfg = cfg
        self._interface = cfg.interface
        self._target = _grpc_target(cfg.endpoint)
        self._template = prompt_template
        self._limits = CallLimits(tier, cfg)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False

    @property
    def tier(self) -> str:
        return self._tier

    @property
    def max_n(self) -> int:
        return 1

    @property
    def limits(self) -> CallLimits:
        return self._limits

    def __repr__(self) -> str:
        return (
            f"TritonBackend(tier={self._tier!r}, target={self._target!r}, "
            f"model={self._cfg.model!r}, interface={self._interface!r})"
        )

    def _connect(self) -> Any:
        if self._closed:
            raise BackendError(f"tier {self._tier!r}: backend is closed")
        if self._stub is None:
            import grpc.aio
            from tritonclient.grpc import service_pb2_grpc

            max_msg = 64 * 1024 * 1024
            self._channel = grpc.aio.insecure_channel(
                self._target,
                options=[
                    ("grpc.max_send_message_length", max_msg),
                    ("grpc.max_receive_message_length", max_msg),
                    ("grpc.max_reconnect_backoff_ms", 5000),
                ],
            )
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    def _text_input(self, request: SampleRequest) -> str:
        return self._template.replace("{prompt}", request.prompt) + request.continuation

    def _vllm_tensors(
        self, request: SampleRequest, max_tokens: int
    ) -> list[tuple[str, str, list[int], bytes]]:
        sampling: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": float(request.temperature),
            "seed": int(request.seed),
        }
        if request.stop:
            sampling["stop"] = list(request.stop)
        if request.logprobs:
            sampling["logprobs"] = 0
        flags = [
            "stream",
            "exclude_input_in_output",
            "return_num_input_tokens",
            "return_num_output_tokens",
            "return_finish_reason",
        ]
        if request.logprobs:
            flags += ["return_logprobs", "return_cumulative_logprob"]
        return [
            ("text_input", "BYTES", [1], _bytes_elements([self._text_input(request)])),
            ("sampling_parameters", "BYTES", [1], _bytes_elements([json.dumps(sampling)])),
            *((name, "BOOL", [1], b"\x01") for name in flags),
        ]

    def _trtllm_tensors(
        self, request: SampleRequest, max_tokens: int
    ) -> list[tuple[str, str, list[int], bytes]]:
        tensors = [
            ("text_input", "BYTES", [1, 1], _bytes_elements([self._text_input(request)])),
            ("max_tokens", "INT32", [1, 1], struct.pack("<i", max_tokens)),
            ("stream", "BOOL", [1, 1], b"\x01"),
            ("temperature", "FP32", [1, 1], struct.pack("<f", float(request.temperature))),
            ("random_seed", "UINT64", [1, 1], struct.pack("<Q", request.seed % 2**64)),
        ]
        stops = [s for s in request.stop if s]
        if stops:
            tensors.append(("stop_words", "BYTES", [1, len(stops)], _bytes_elements(stops)))
        if request.logprobs:
            tensors.append(("return_log_probs", "BOOL", [1, 1], b"\x01"))
        return tensors

    def _infer_request(self, request: SampleRequest, max_tokens: int) -> Any:
        from tritonclient.grpc import service_pb2

        msg = service_pb2.ModelInferRequest(
            model_name=self._cfg.model, id=f"{self._tier}-{uuid.uuid4().hex[:16]}"
        )
        msg.parameters["triton_enable_empty_final_response"].bool_param = True
        tensors = (
            self._trtllm_tensors(request, max_tokens)
            if self._interface == "trtllm"
            else self._vllm_tensors(request, max_tokens)
        )
        for name, datatype, shape, raw in tensors:
            tensor = msg.inputs.add()
            tensor.name = name
            tensor.datatype = datatype
            tensor.shape.extend(shape)
            msg.raw_input_contents.append(raw)
        return msg

    def _rpc_error(self, exc: Exception, partial: int) -> BackendError:
        import grpc

        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            details = _excerpt(exc.details() or "")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return BackendTimeout(
                    f"tier {self._tier!r}: Triton deadline exceeded ({details})",
                    partial_output_tokens=partial,
                )
            if code == grpc.StatusCode.UNAVAILABLE:
                return BackendError(
                    f"tier {self._tier!r}: Triton at {self._target} is unavailable ({details})",
                    retriable=True,
                    partial_output_tokens=partial,
                )
            return BackendError(
                f"tier {self._tier!r}: Triton stream failed: {code.name}: {details}",
                retriable=code.name in _RETRIABLE_CODES,
                partial_output_tokens=partial,
            )
        return BackendError(
            f"tier {self._tier!r}: Triton stream failed: {type(exc).__name__}",
            retriable=True,
            partial_output_tokens=partial,
        )

    def _model_error(self, message: str, partial: int) -> BackendError:
        """A response's ``error_message``: rejected requests are final, engine failures not."""
        excerpt = _excerpt(message)
        return BackendError(
            f"tier {self._tier!r}: Triton model {self._cfg.model!r} failed: {excerpt}",
            retriable=_REJECTED.search(excerpt) is None,
            partial_output_tokens=partial,
        )

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """Stream one sample: text deltas, then exactly one ``SampleResult``.

        Closing the generator early (``aclose()``, or cancelling the consuming task) cancels
        the server-side request and frees the concurrency slot.
        """
        import grpc

        if request.n != 1:
            raise BackendError(
                f"tier {self._tier!r}: Triton serves one sample per request (max_n=1), "
                f"not n={request.n}"
            )
        if request.max_tokens < 1:
            raise BackendError(f"tier {self._tier!r}: max_tokens must be at least 1")
        max_tokens = min(request.max_tokens, self._cfg.max_output_tokens)
        deadline, budget = self._limits.deadline(request)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopScanner(request.stop)
        progress = _Progress()
        parts: list[str] = []
        async with self._limits.slot(deadline, budget):
            stub = self._connect()
            call = stub.ModelStreamInfer(
                iter([self._infer_request(request, max_tokens)]),
                timeout=max(0.001, self._limits.remaining(deadline)),
            )
            try:
                while not stops.hit:
                    try:
                        msg = await self._limits.within(
                            deadline, budget, call.read(), "streaming from Triton"
                        )
                    except BackendError as exc:
                        exc.partial_output_tokens = max(
                            exc.partial_output_tokens, progress.tokens_so_far
                        )
                        raise
                    except Exception as exc:
                        raise self._rpc_error(exc, progress.tokens_so_far) from None
                    if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                        raise BackendError(
                            f"tier {self._tier!r}: Triton closed the stream before the "
                            "final response",
                            retriable=True,
                            partial_output_tokens=progress.tokens_so_far,
                        )
                    if msg.error_message:
                        raise self._model_error(msg.error_message, progress.tokens_so_far)
                    response = msg.infer_response
                    if response.outputs:
                        out = self._decode(response)
                        progress.add(out)
                        chunk = stops.feed(decoder.decode(out.text))
                        if chunk:
                            parts.append(chunk)
                            yield TextDelta(chunk)
                    if _FINAL in response.parameters and response.parameters[_FINAL].bool_param:
                        break
            finally:
                if not call.done():
                    call.cancel()
        tail = "" if stops.hit else stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        if tail:
            parts.append(tail)
            yield TextDelta(tail)
        if progress.finish == "abort":
            raise BackendError(
                f"tier {self._tier!r}: Triton aborted the request",
                retriable=True,
                partial_output_tokens=progress.tokens_so_far,
            )
        yield self._result(request, "".join(parts), progress, max_tokens, stops.hit)

    def _result(
        self,
        request: SampleRequest,
        text: str,
        progress: _Progress,
        max_tokens: int,
        stopped: bool,
    ) -> SampleResult:
        estimated = progress.input_tokens is None or progress.output_tokens is None
        if estimated and self._interface == "vllm":
            log.warning("tier %r: Triton reported no token counts; estimating them", self._tier)
        input_tokens = (
            progress.input_tokens
            if progress.input_tokens is not None
            else estimate_tokens(self._text_input(request))
        )
        output_tokens = progress.tokens_so_far
        finish = "stop" if stopped else progress.finish
        if finish is None:
            finish = "length" if output_tokens >= max_tokens else "stop"
        return SampleResult(
            text,
            input_tokens,
            output_tokens,
            finish,
            usage_estimated=estimated,
            mean_logprob=self._mean_logprob(request, progress, output_tokens),
        )

    def _mean_logprob(
        self, request: SampleRequest, progress: _Progress, output_tokens: int
    ) -> float | None:
        """Mean log-probability of the generated tokens, when they were asked for.

        vLLM: the per-token values, else the cumulative one over the tokens. TensorRT-LLM: the
        cumulative value over the tokens, else the per-token values.
        """
        if not request.logprobs:
            return None
        per_token = sum(progress.logprobs) / len(progress.logprobs) if progress.logprobs else None
        cumulative = (
            progress.cumulative_logprob / output_tokens
            if progress.cumulative_logprob is not None and output_tokens > 0
            else None
        )
        if self._interface == "trtllm":
            return cumulative if cumulative is not None else per_token
        return per_token if per_token is not None else cumulative

    def _decode(self, response: Any) -> _Outputs:
        """The output tensors of one streamed response."""
        from tritonclient.grpc import InferResult

        try:
            result = InferResult(response)
            text = result.as_numpy("text_output")
            raw = b"".join(bytes(x) for x in text.reshape(-1)) if text is not None else b""
            if self._interface == "trtllm":
                cum = _flat_floats(result.as_numpy("cum_log_probs"))
                return _Outputs(
                    text=raw,
                    logprobs=_flat_floats(result.as_numpy("output_log_probs")),
                    cumulative_logprob=cum[-1] if cum else None,
                )
            n_in = result.as_numpy("num_input_tokens")
            n_out = result.as_numpy("num_output_tokens")
            reason = result.as_numpy("finish_reason")
            finish = None
            if reason is not None and reason.size:
                value = bytes(reason.reshape(-1)[0]).decode("utf-8", "replace")
                finish = value if value not in ("", "None") else None
            cum = _flat_floats(result.as_numpy("cumulative_logprob"))
            return _Outputs(
                text=raw,
                input_tokens=int(n_in.reshape(-1)[0]) if n_in is not None and n_in.size else None,
                output_tokens=int(n_out.sum()) if n_out is not None else None,
                finish=finish,
                logprobs=_vllm_logprobs(result.as_numpy("logprobs")),
                cumulative_logprob=cum[-1] if cum else None,
            )
        except Exception as exc:
            raise BackendError(
                f"tier {self._tier!r}: Triton sent a response the adapter cannot read "
                f"({type(exc).__name__}); is {self._cfg.model!r} a "
                f"{'TensorRT-LLM ensemble' if self._interface == 'trtllm' else 'vLLM-backend'}"
                " model?"
            ) from None

    async def ready(self) -> bool:
        """True when the Triton server is live and the tier's model is ready."""
        import grpc
        from tritonclient.grpc import service_pb2

        try:
            stub = self._connect()
            async with asyncio.timeout(min(_PROBE_TIMEOUT_S, self._cfg.timeout_s)):
                live = await stub.ServerLive(service_pb2.ServerLiveRequest())
                if not live.live:
                    return False
                model = await stub.ModelReady(service_pb2.ModelReadyRequest(name=self._cfg.model))
                return bool(model.ready)
        except (grpc.aio.AioRpcError, TimeoutError, BackendError):
            return False

    async def aclose(self) -> None:
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(None)

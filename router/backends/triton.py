"""Backend adapter for NVIDIA Triton serving an LLM through its vLLM backend.

Speaks the vLLM backend's tensor interface over Triton's gRPC streaming API
(``ModelStreamInfer``): inputs ``text_input`` (BYTES [1]), ``stream``,
``exclude_input_in_output``, ``return_num_input_tokens``, ``return_num_output_tokens``,
``return_finish_reason`` (BOOL [1]) and ``sampling_parameters`` (BYTES [1], JSON with
``max_tokens``, ``temperature``, ``seed``); outputs ``text_output`` (BYTES, a delta per
response when streaming), ``num_input_tokens``, ``num_output_tokens`` (UINT32, the tokens
added by that response) and ``finish_reason`` (BYTES).

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
import math
import struct
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.backends.limits import CallLimits
from router.config.backends import TierConfig
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout, ConfigError

if TYPE_CHECKING:
    import grpc.aio

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
_EXCERPT = 200
_FINAL = "triton_final_response"


def _excerpt(text: str) -> str:
    """A short one-line form of a server message; a Python traceback becomes its last line."""
    if "Traceback (most recent call last)" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1] if lines else text
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _bytes_element(value: str) -> bytes:
    """One element of a Triton BYTES tensor: 4-byte little-endian length, then the bytes."""
    raw = value.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def _grpc_target(endpoint: str) -> str:
    return endpoint.split("://", 1)[1].rstrip("/") if "://" in endpoint else endpoint


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for servers that report none."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass(frozen=True)
class _Outputs:
    text: bytes
    input_tokens: int | None
    output_tokens: int | None
    finish: str | None


class TritonBackend:
    """One tier served by Triton's vLLM backend (``protocol: triton``).

    ``cfg.endpoint`` is Triton's gRPC ``host:port``, ``cfg.model`` the Triton model name.
    ``prompt_template`` wraps the prompt before it is sent (the vLLM backend does not apply a
    chat template); ``"{prompt}"`` is replaced by the prompt text.

    Token counts are the ones Triton reports (``num_input_tokens``; the sum of the
    per-response ``num_output_tokens``). A server too old to report them gets an estimate of
    one token per four characters, and a warning is logged.
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
            f"model={self._cfg.model!r})"
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

    def _infer_request(self, request: SampleRequest, max_tokens: int) -> Any:
        from tritonclient.grpc import service_pb2

        msg = service_pb2.ModelInferRequest(
            model_name=self._cfg.model, id=f"{self._tier}-{uuid.uuid4().hex[:16]}"
        )
        msg.parameters["triton_enable_empty_final_response"].bool_param = True
        sampling = {
            "max_tokens": max_tokens,
            "temperature": float(request.temperature),
            "seed": int(request.seed),
        }
        tensors: list[tuple[str, str, bytes]] = [
            (
                "text_input",
                "BYTES",
                _bytes_element(self._template.replace("{prompt}", request.prompt)),
            ),
            ("stream", "BOOL", b"\x01"),
            ("sampling_parameters", "BYTES", _bytes_element(json.dumps(sampling))),
            ("exclude_input_in_output", "BOOL", b"\x01"),
            ("return_num_input_tokens", "BOOL", b"\x01"),
            ("return_num_output_tokens", "BOOL", b"\x01"),
            ("return_finish_reason", "BOOL", b"\x01"),
        ]
        for name, datatype, raw in tensors:
            tensor = msg.inputs.add()
            tensor.name = name
            tensor.datatype = datatype
            tensor.shape.append(1)
            msg.raw_input_contents.append(raw)
        return msg

    def _rpc_error(self, exc: Exception) -> BackendError:
        import grpc

        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            details = _excerpt(exc.details() or "")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return BackendTimeout(f"tier {self._tier!r}: Triton deadline exceeded ({details})")
            if code == grpc.StatusCode.UNAVAILABLE:
                return BackendError(
                    f"tier {self._tier!r}: Triton at {self._target} is unavailable ({details})"
                )
            return BackendError(
                f"tier {self._tier!r}: Triton stream failed: {code.name}: {details}"
            )
        return BackendError(f"tier {self._tier!r}: Triton stream failed: {type(exc).__name__}")

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """Stream one sample: text deltas, then exactly one ``SampleResult``.

        Closing the generator early (``aclose()``, or cancelling the consuming task) cancels
        the server-side request and frees the concurrency slot.
        """
        import grpc

        if request.max_tokens < 1:
            raise BackendError(f"tier {self._tier!r}: max_tokens must be at least 1")
        max_tokens = min(request.max_tokens, self._cfg.max_output_tokens)
        deadline, budget = self._limits.deadline(request)
        async with self._limits.slot(deadline, budget):
            stub = self._connect()
            call = stub.ModelStreamInfer(
                iter([self._infer_request(request, max_tokens)]),
                timeout=max(0.001, self._limits.remaining(deadline)),
            )
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            parts: list[str] = []
            input_tokens: int | None = None
            output_tokens: int | None = None
            finish: str | None = None
            try:
                while True:
                    try:
                        msg = await self._limits.within(
                            deadline, budget, call.read(), "streaming from Triton"
                        )
                    except BackendError:
                        raise
                    except grpc.aio.AioRpcError as exc:
                        raise self._rpc_error(exc) from None
                    except Exception as exc:
                        raise self._rpc_error(exc) from None
                    if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                        raise BackendError(
                            f"tier {self._tier!r}: Triton closed the stream before the "
                            "final response"
                        )
                    if msg.error_message:
                        raise BackendError(
                            f"tier {self._tier!r}: Triton model {self._cfg.model!r} failed: "
                            f"{_excerpt(msg.error_message)}"
                        )
                    response = msg.infer_response
                    if response.outputs:
                        out = self._decode(response)
                        chunk = decoder.decode(out.text)
                        if chunk:
                            parts.append(chunk)
                            yield TextDelta(chunk)
                        if out.input_tokens is not None:
                            input_tokens = out.input_tokens
                        if out.output_tokens is not None:
                            output_tokens = (output_tokens or 0) + out.output_tokens
                        finish = out.finish or finish
                    if _FINAL in response.parameters and response.parameters[_FINAL].bool_param:
                        break
            finally:
                if not call.done():
                    call.cancel()
        tail = decoder.decode(b"", final=True)
        if tail:
            parts.append(tail)
            yield TextDelta(tail)
        text = "".join(parts)
        if finish == "abort":
            raise BackendError(f"tier {self._tier!r}: Triton aborted the request")
        if input_tokens is None or output_tokens is None:
            log.warning(
                "tier %r: Triton reported no token counts; estimating 4 characters a token",
                self._tier,
            )
        prompt_tokens = (
            input_tokens if input_tokens is not None else estimate_tokens(request.prompt)
        )
        completion_tokens = output_tokens if output_tokens is not None else estimate_tokens(text)
        if finish is None:
            finish = "length" if completion_tokens >= max_tokens else "stop"
        yield SampleResult(text, prompt_tokens, completion_tokens, finish)

    def _decode(self, response: Any) -> _Outputs:
        """The vLLM backend's output tensors of one streamed response."""
        from tritonclient.grpc import InferResult

        try:
            result = InferResult(response)
            text = result.as_numpy("text_output")
            n_in = result.as_numpy("num_input_tokens")
            n_out = result.as_numpy("num_output_tokens")
            reason = result.as_numpy("finish_reason")
            finish = None
            if reason is not None and reason.size:
                value = bytes(reason.reshape(-1)[0]).decode("utf-8", "replace")
                finish = value if value not in ("", "None") else None
            return _Outputs(
                text=b"".join(bytes(x) for x in text.reshape(-1)) if text is not None else b"",
                input_tokens=int(n_in.reshape(-1)[0]) if n_in is not None and n_in.size else None,
                output_tokens=int(n_out.sum()) if n_out is not None else None,
                finish=finish,
            )
        except Exception as exc:
            raise BackendError(
                f"tier {self._tier!r}: Triton sent a response the adapter cannot read "
                f"({type(exc).__name__}); is {self._cfg.model!r} a vLLM-backend model?"
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

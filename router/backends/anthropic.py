"""Backend adapter for the Anthropic Messages API (``protocol: anthropic``).

``POST {endpoint}/v1/messages`` with ``stream: true``; the reply is Server-Sent Events whose
``data:`` lines carry typed JSON events:

* ``message_start``: the message skeleton, with ``usage.input_tokens``;
* ``content_block_start`` / ``content_block_stop``: the bounds of a content block;
* ``content_block_delta``: text arrives as ``delta: {"type": "text_delta", "text": …}``;
* ``message_delta``: ``delta.stop_reason`` and the cumulative ``usage.output_tokens``;
* ``message_stop``: the end of the stream;
* ``ping``: keep-alive; ``error``: a failure after the HTTP 200 (e.g. ``overloaded_error``).

Error replies carry ``{"type": "error", "error": {"type": …, "message": …}}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from router.backends.common import (
    CONNECT_TIMEOUT_S,
    api_key,
    estimate_tokens,
    excerpt,
    http_endpoint,
    pooled_client,
)
from router.backends.limits import CallLimits
from router.config.backends import TierConfig
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout, ConfigError

log = logging.getLogger(__name__)

API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header sent with every request."""

_PROBE_TIMEOUT_S = 5.0
_RETRIABLE_TYPES = frozenset({"overloaded_error", "rate_limit_error", "api_error"})
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _skip_repeated(text: str, dropped: str) -> tuple[str, str]:
    """Cut from ``text`` the start it shares with ``dropped`` (whitespace the prefill lost);
    return the rest of ``text`` and what of ``dropped`` may still be repeated next."""
    n = 0
    while n < min(len(text), len(dropped)) and text[n] == dropped[n]:
        n += 1
    rest = text[n:]
    return rest, (dropped[n:] if not rest else "")


def _error_detail(payload: Any) -> tuple[str, str]:
    """``(error type, message)`` of an Anthropic error object; empty strings when absent."""
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("type") or ""), str(err.get("message") or "")


class _Progress:
    """What one streamed message has produced so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.deltas = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stopped = False

    @property
    def partial_output_tokens(self) -> int:
        return max(self.deltas, self.output_tokens or 0)


class AnthropicBackend:
    """One tier served over the Anthropic Messages API.

    The prompt is sent as a single user message; ``SampleRequest.continuation`` becomes an
    assistant message the model continues from (a prefill), and the result covers only what
    the model adds. ``cfg.api_key_env`` names the environment variable holding the
    ``x-api-key``; it must be set when the backend is built and is read again on every call,
    so a rotated key takes effect without a restart. The API returns one sample per request
    (``max_n`` = 1), takes ``temperature`` in [0, 1] (higher values are clamped) and has no
    seed. One pooled ``httpx.AsyncClient`` serves all calls; a client passed in is used as
    is and not closed by ``aclose``.
    """

    def __init__(
        self, tier: str, cfg: TierConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        if cfg.protocol != "anthropic":
            raise ConfigError(
                f"tier {tier!r}: AnthropicBackend needs protocol 'anthropic', not {cfg.protocol!r}"
            )
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise ConfigError(
                f"tier {tier!r}: environment variable {cfg.api_key_env} (api_key_env) is not set"
            )
        self._tier = tier
        self._cfg = cfg
        self._base, self._where = http_endpoint(tier, cfg.endpoint, "https://api.anthropic.com")
        self._limits = CallLimits(tier, cfg)
        self._owns_client = client is None
        self._client = client or pooled_client(cfg)

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
            f"AnthropicBackend(tier={self._tier!r}, endpoint={self._where!r}, "
            f"model={self._cfg.model!r})"
        )

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "anthropic-version": API_VERSION}
        key = api_key(self._tier, self._cfg.api_key_env)
        if key is not None:
            headers["x-api-key"] = key
        return headers

    @staticmethod
    def _prefill(continuation: str) -> str:
        """The API refuses an assistant prefill that ends in whitespace; it is cut off here."""
        return continuation.rstrip()

    def _body(self, request: SampleRequest, max_tokens: int) -> dict[str, Any]:
        messages: list[dict[str, str]] = [{"role": "user", "content": request.prompt}]
        prefill = self._prefill(request.continuation)
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        body: dict[str, Any] = {
            "model": self._cfg.model,
            "max_tokens": max_tokens,
            "messages": messages,
            "stream": True,
            "temperature": min(1.0, max(0.0, request.temperature)),
        }
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        return body

    def _transport_error(self, exc: httpx.HTTPError, progress: _Progress | None) -> BackendError:
        started = progress is not None
        what = "while streaming" if started else "before the response"
        partial = progress.partial_output_tokens if progress is not None else 0
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"tier {self._tier!r}: {self._where} timed out {what} ({type(exc).__name__})",
                partial_output_tokens=partial,
            )
        if isinstance(exc, httpx.ConnectError):
            return BackendError(
                f"tier {self._tier!r}: cannot connect to {self._where}", retriable=True
            )
        if started:
            return BackendError(
                f"tier {self._tier!r}: connection to {self._where} broke mid-stream "
                f"({type(exc).__name__})",
                partial_output_tokens=partial,
            )
        return BackendError(
            f"tier {self._tier!r}: request to {self._where} failed ({type(exc).__name__})",
            retriable=True,
        )

    async def _status_error(self, response: httpx.Response) -> BackendError:
        status = response.status_code
        kind, detail = "", ""
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        try:
            kind, detail = _error_detail(json.loads(raw[:20000]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            detail = raw[:2000].decode("utf-8", "replace")
        detail = excerpt(detail)
        message = f"tier {self._tier!r}: {self._where} answered HTTP {status}" + (
            f" ({kind})" if kind else ""
        )
        if detail:
            message += f": {detail}"
        retriable = status == 429 or status >= 500 or kind in _RETRIABLE_TYPES
        if status in (408, 504):
            return BackendTimeout(message, retriable=True)
        return BackendError(message, retriable=retriable)

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """Stream one sample: text deltas, then exactly one ``SampleResult``.

        Closing the generator early (``aclose()``, or cancelling the consuming task) cancels
        the server-side request and frees the concurrency slot.
        """
        if request.max_tokens < 1:
            raise BackendError(f"tier {self._tier!r}: max_tokens must be at least 1")
        if request.n != 1:
            raise BackendError(
                f"tier {self._tier!r}: the Messages API returns one sample per request "
                f"(asked for n={request.n})"
            )
        max_tokens = min(request.max_tokens, self._cfg.max_output_tokens)
        deadline, budget = self._limits.deadline(request)
        headers = self._headers("text/event-stream")
        progress = _Progress()
        # What the prefill lost to rstrip; the model's first words may repeat it.
        dropped = request.continuation[len(self._prefill(request.continuation)) :]
        async with self._limits.slot(deadline, budget):
            left = max(0.001, self._limits.remaining(deadline))
            http_request = self._client.build_request(
                "POST",
                f"{self._base}/v1/messages",
                json=self._body(request, max_tokens),
                headers=headers,
                timeout=httpx.Timeout(left, connect=min(CONNECT_TIMEOUT_S, left)),
            )
            try:
                response = await self._limits.within(
                    deadline,
                    budget,
                    self._client.send(http_request, stream=True),
                    f"request to {self._where}",
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, None) from None
            try:
                if response.status_code >= 400:
                    raise await self._limits.within(
                        deadline, budget, self._status_error(response), "reading an error body"
                    )
                lines = response.aiter_lines()
                while not progress.stopped:
                    try:
                        line = await self._limits.within(
                            deadline, budget, anext(lines), f"streaming from {self._where}"
                        )
                    except StopAsyncIteration:
                        break
                    except httpx.HTTPError as exc:
                        raise self._transport_error(exc, progress) from None
                    except BackendTimeout as exc:
                        exc.partial_output_tokens = progress.partial_output_tokens
                        raise
                    event = self._event(line)
                    if event is None:
                        continue
                    text = self._apply(event, progress)
                    if text and dropped:
                        text, dropped = _skip_repeated(text, dropped)
                    if text:
                        progress.parts.append(text)
                        yield TextDelta(text)
            finally:
                await response.aclose()
        if not progress.stopped and progress.stop_reason is None:
            raise BackendError(
                f"tier {self._tier!r}: stream from {self._where} ended before the answer "
                "was complete",
                retriable=progress.deltas == 0,
                partial_output_tokens=progress.partial_output_tokens,
            )
        yield self._result(request, progress)

    def _event(self, line: str) -> dict[str, Any] | None:
        """The JSON object of an SSE ``data:`` line; ``None`` for ``event:`` lines, blanks."""
        if not line.startswith("data:"):
            return None
        try:
            event = json.loads(line[5:].strip())
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            raise BackendError(f"tier {self._tier!r}: {self._where} sent a malformed stream event")
        return event

    def _apply(self, event: dict[str, Any], progress: _Progress) -> str:
        """Fold one event into ``progress``; return the text it adds (may be empty)."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                progress.deltas += 1
                return str(delta.get("text") or "")
        elif kind == "message_start":
            message = event.get("message") or {}
            usage = message.get("usage") if isinstance(message, dict) else None
            self._take_usage(usage, progress)
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if isinstance(delta, dict) and delta.get("stop_reason"):
                progress.stop_reason = str(delta["stop_reason"])
            self._take_usage(event.get("usage"), progress)
        elif kind == "message_stop":
            progress.stopped = True
        elif kind == "error":
            err_type, detail = _error_detail(event)
            raise BackendError(
                f"tier {self._tier!r}: {self._where} reported an error mid-stream"
                + (f" ({err_type})" if err_type else "")
                + (f": {excerpt(detail)}" if detail else ""),
                retriable=progress.deltas == 0 and err_type in _RETRIABLE_TYPES,
                partial_output_tokens=progress.partial_output_tokens,
            )
        return ""

    @staticmethod
    def _take_usage(usage: Any, progress: _Progress) -> None:
        if not isinstance(usage, dict):
            return
        counted = [
            usage.get(k)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ]
        if isinstance(counted[0], int):
            progress.input_tokens = sum(v for v in counted if isinstance(v, int))
        if isinstance(usage.get("output_tokens"), int):
            progress.output_tokens = usage["output_tokens"]

    def _result(self, request: SampleRequest, progress: _Progress) -> SampleResult:
        text = "".join(progress.parts)
        reason = progress.stop_reason or "end_turn"
        finish = _FINISH.get(reason, reason)
        if progress.input_tokens is not None and progress.output_tokens is not None:
            return SampleResult(text, progress.input_tokens, progress.output_tokens, finish)
        log.warning(
            "tier %r: %s sent no usage; estimating 4 characters a token", self._tier, self._where
        )
        return SampleResult(
            text,
            progress.input_tokens
            if progress.input_tokens is not None
            else estimate_tokens(request.prompt + request.continuation),
            progress.output_tokens if progress.output_tokens is not None else estimate_tokens(text),
            finish,
            usage_estimated=True,
        )

    async def ready(self) -> bool:
        """True when ``GET {endpoint}/v1/models/{model}`` answers 200 (the model exists and
        the key is accepted)."""
        try:
            headers = self._headers("application/json")
            response = await self._client.get(
                f"{self._base}/v1/models/{self._cfg.model}",
                headers=headers,
                timeout=min(_PROBE_TIMEOUT_S, self._cfg.timeout_s),
            )
            return response.status_code == 200
        except (httpx.HTTPError, BackendError):
            return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

"""Backend adapter for OpenAI-compatible chat servers (vLLM, SGLang, hosted APIs).

``POST {endpoint}/v1/chat/completions`` with ``stream: true`` and
``stream_options: {"include_usage": true}``; the reply is Server-Sent Events whose ``data:``
lines carry ``chat.completion.chunk`` objects until ``data: [DONE]``. Text deltas come from
``choices[0].delta.content``, the finish reason from ``choices[0].finish_reason``, token
counts from the ``usage`` object of the last chunk.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from router.backends.limits import CallLimits
from router.config.backends import TierConfig
from router.core.types import SampleRequest, SampleResult, TextDelta
from router.errors import BackendError, BackendTimeout, ConfigError

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 5.0
_BODY_EXCERPT = 200


def estimate_tokens(text: str) -> int:
    """Rough token count (4 characters a token) for servers that report no usage."""
    return math.ceil(len(text) / 4) if text else 0


def _base_url(endpoint: str) -> str:
    """The endpoint without a trailing ``/`` or ``/v1``; both spellings are accepted."""
    url = endpoint.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class OpenAICompatibleBackend:
    """One tier served over the OpenAI chat-completions API (``protocol: openai``).

    The prompt is sent as a single user message. ``cfg.api_key_env`` names the environment
    variable holding a bearer key; it is read on every call so a rotated key takes effect
    without a restart. One pooled ``httpx.AsyncClient`` is shared by all calls (sized by
    ``max_concurrency``); a client passed in is used as is and not closed by ``aclose``.

    Usage: a server that sends no ``usage`` object gets an *estimate* of one token per four
    characters of prompt and answer (the ``SampleResult`` cannot say it is estimated; a
    warning is logged each time).
    """

    def __init__(
        self, tier: str, cfg: TierConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        if cfg.protocol != "openai":
            raise ConfigError(
                f"tier {tier!r}: OpenAICompatibleBackend needs protocol 'openai', "
                f"not {cfg.protocol!r}"
            )
        self._tier = tier
        self._cfg = cfg
        self._base = _base_url(cfg.endpoint)
        try:
            url = httpx.URL(self._base)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"tier {tier!r}: endpoint must be an http(s) URL such as 'http://host:8000'"
            )
        self._where = self._describe_endpoint(url)
        self._limits = CallLimits(tier, cfg)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=cfg.max_concurrency,
                max_keepalive_connections=cfg.max_concurrency,
            ),
            timeout=httpx.Timeout(cfg.timeout_s, connect=min(_CONNECT_TIMEOUT_S, cfg.timeout_s)),
        )

    @staticmethod
    def _describe_endpoint(url: httpx.URL) -> str:
        """Scheme, host and port only: never credentials or query strings."""
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.host}{port}"

    @property
    def tier(self) -> str:
        return self._tier

    @property
    def max_n(self) -> int:
        return self._cfg.n_per_request or 16

    @property
    def limits(self) -> CallLimits:
        return self._limits

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleBackend(tier={self._tier!r}, endpoint={self._where!r}, "
            f"model={self._cfg.model!r})"
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        env = self._cfg.api_key_env
        if env:
            key = os.environ.get(env, "")
            if not key:
                raise BackendError(
                    f"tier {self._tier!r}: environment variable {env} (api_key_env) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, request: SampleRequest, max_tokens: int) -> dict[str, Any]:
        return {
            "model": self._cfg.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def _transport_error(self, exc: httpx.HTTPError, started: bool) -> BackendError:
        what = "while streaming" if started else "before the response"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"tier {self._tier!r}: {self._where} timed out {what} ({type(exc).__name__})"
            )
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"tier {self._tier!r}: cannot connect to {self._where}")
        if started:
            return BackendError(
                f"tier {self._tier!r}: connection to {self._where} broke mid-stream "
                f"({type(exc).__name__})"
            )
        return BackendError(
            f"tier {self._tier!r}: request to {self._where} failed ({type(exc).__name__})"
        )

    async def _status_error(self, response: httpx.Response) -> BackendError:
        try:
            raw = await response.aread()
            body = " ".join(raw[:2000].decode("utf-8", "replace").split())
        except httpx.HTTPError:
            body = ""
        if len(body) > _BODY_EXCERPT:
            body = body[: _BODY_EXCERPT - 1] + "…"
        status = response.status_code
        message = f"tier {self._tier!r}: {self._where} answered HTTP {status}" + (
            f": {body}" if body else ""
        )
        return BackendTimeout(message) if status in (408, 504) else BackendError(message)

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """Stream one sample: text deltas, then exactly one ``SampleResult``.

        Closing the generator early (``aclose()``, or cancelling the consuming task) cancels
        the server-side request and frees the concurrency slot.
        """
        if request.max_tokens < 1:
            raise BackendError(f"tier {self._tier!r}: max_tokens must be at least 1")
        max_tokens = min(request.max_tokens, self._cfg.max_output_tokens)
        deadline, budget = self._limits.deadline(request)
        headers = self._headers()
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish: str | None = None
        done = False
        async with self._limits.slot(deadline, budget):
            http_request = self._client.build_request(
                "POST",
                f"{self._base}/v1/chat/completions",
                json=self._body(request, max_tokens),
                headers=headers,
                timeout=httpx.Timeout(
                    max(0.001, self._limits.remaining(deadline)),
                    connect=min(_CONNECT_TIMEOUT_S, max(0.001, self._limits.remaining(deadline))),
                ),
            )
            try:
                response = await self._limits.within(
                    deadline,
                    budget,
                    self._client.send(http_request, stream=True),
                    f"request to {self._where}",
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, started=False) from None
            try:
                if response.status_code >= 400:
                    raise await self._limits.within(
                        deadline, budget, self._status_error(response), "reading an error body"
                    )
                lines = response.aiter_lines()
                while not done:
                    try:
                        line = await self._limits.within(
                            deadline, budget, anext(lines), f"streaming from {self._where}"
                        )
                    except StopAsyncIteration:
                        break
                    except httpx.HTTPError as exc:
                        raise self._transport_error(exc, started=True) from None
                    payload = self._data(line)
                    if payload is None:
                        continue
                    if payload == "[DONE]":
                        done = True
                        break
                    chunk = self._chunk(payload)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            parts.append(content)
                            yield TextDelta(content)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
            finally:
                await response.aclose()
        if not done and finish is None:
            raise BackendError(
                f"tier {self._tier!r}: stream from {self._where} ended before the answer "
                "was complete"
            )
        text = "".join(parts)
        yield self._result(request, text, usage, finish or "stop")

    @staticmethod
    def _data(line: str) -> str | None:
        """The payload of an SSE ``data:`` line; ``None`` for comments, other fields, blanks."""
        if not line.startswith("data:"):
            return None
        return line[5:].strip()

    def _chunk(self, payload: str) -> dict[str, Any]:
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(
                f"tier {self._tier!r}: {self._where} sent a malformed stream chunk"
            ) from None
        if not isinstance(chunk, dict):
            raise BackendError(f"tier {self._tier!r}: {self._where} sent a malformed stream chunk")
        if chunk.get("error"):
            err = chunk["error"]
            detail = err.get("message", "") if isinstance(err, dict) else str(err)
            raise BackendError(
                f"tier {self._tier!r}: {self._where} reported an error mid-stream: "
                f"{str(detail)[:_BODY_EXCERPT]}"
            )
        return chunk

    def _result(
        self, request: SampleRequest, text: str, usage: dict[str, Any] | None, finish: str
    ) -> SampleResult:
        prompt_tokens = completion_tokens = None
        if usage:
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            log.warning(
                "tier %r: %s sent no usage; estimating 4 characters a token",
                self._tier,
                self._where,
            )
            prompt_tokens = estimate_tokens(request.prompt)
            completion_tokens = estimate_tokens(text)
        return SampleResult(text, prompt_tokens, completion_tokens, finish)

    async def ready(self) -> bool:
        """True when ``GET {endpoint}/v1/models`` answers and lists the tier's model."""
        try:
            headers = self._headers()
            headers["Accept"] = "application/json"
            response = await self._client.get(
                f"{self._base}/v1/models",
                headers=headers,
                timeout=min(_PROBE_TIMEOUT_S, self._cfg.timeout_s),
            )
            if response.status_code != 200:
                return False
            listed = response.json().get("data") or []
            return any(isinstance(m, dict) and m.get("id") == self._cfg.model for m in listed)
        except (httpx.HTTPError, ValueError, AttributeError, BackendError):
            return False

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

"""Backend adapter for OpenAI-compatible chat servers (vLLM, SGLang, hosted APIs).

``POST {endpoint}/v1/chat/completions`` with ``stream: true`` and
``stream_options: {"include_usage": true}``; the reply is Server-Sent Events whose ``data:``
lines carry ``chat.completion.chunk`` objects until ``data: [DONE]``. Each chunk's
``choices[]`` entries are told apart by ``index`` (``n`` samples in one request): text from
``delta.content``, log-probabilities from ``logprobs.content[].logprob``, the finish reason
from ``finish_reason``; token counts come from the ``usage`` object of the last chunk.

A request's ``continuation`` (an assistant prefix) is sent as a final assistant message with
vLLM's ``continue_final_message: true, add_generation_prompt: false``, which servers without
that extension refuse. With ``dialect: openai`` (the hosted OpenAI API) the output limit is
sent as ``max_completion_tokens`` and a continuation is refused before any call.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx

from router.backends.common import (
    CONNECT_TIMEOUT_S,
    EXCERPT_CHARS,
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

_PROBE_TIMEOUT_S = 5.0


def split_tokens(total: int, counts: list[int]) -> list[int]:
    """Share ``total`` out in proportion to ``counts`` (largest remainder first, ties to the
    lower index); the shares always sum to ``total``. With no counts to go by, evenly."""
    if not counts:
        return []
    if sum(counts) == total:
        return list(counts)
    weights = counts if sum(counts) > 0 else [1] * len(counts)
    raw = [total * w / sum(weights) for w in weights]
    shares = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (shares[i] - raw[i], i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _server_message(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return body


def _retriable_stream_error(err: Any) -> bool:
    """Whether an error object sent mid-stream reports a server-side (5xx/429) failure."""
    if not isinstance(err, dict):
        return False
    code = err.get("code")
    if isinstance(code, int):
        return code == 429 or code >= 500
    kind = f"{err.get('type', '')} {code or ''}".lower()
    return any(w in kind for w in ("server", "internal", "overload", "unavailable", "rate"))


@dataclass
class _Choice:
    """What one choice (sample) of the stream has produced."""

    parts: list[str] = field(default_factory=list)
    chunks: int = 0
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None

    def add(self, raw: dict[str, Any]) -> str:
        """Take one ``choices[]`` entry of a chunk; return its new text."""
        delta = raw.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(content, str):
            content = ""
        if content:
            self.parts.append(content)
            self.chunks += 1
        logprobs = raw.get("logprobs")
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        if isinstance(entries, list):
            self.logprobs.extend(
                float(e["logprob"])
                for e in entries
                if isinstance(e, dict) and isinstance(e.get("logprob"), int | float)
            )
        if raw.get("finish_reason"):
            self.finish = str(raw["finish_reason"])
        return content

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tokens(self) -> int:
        """Tokens streamed: one per log-probability entry if any came, else per content chunk."""
        return len(self.logprobs) if self.logprobs else self.chunks

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


class OpenAICompatibleBackend:
    """One tier served over the OpenAI chat-completions API (``protocol: openai``).

    The prompt is sent as a single user message. ``cfg.api_key_env`` names the environment
    variable holding a bearer key; it is read on every call so a rotated key takes effect
    without a restart. One pooled ``httpx.AsyncClient`` is shared by all calls (sized by
    ``max_concurrency``); a client passed in is used as is and not closed by ``aclose``.

    ``max_n`` is ``n_per_request`` (16 when unset); ``request.n`` > 1 asks for that many
    choices in one request. The server reports usage for the whole request (vLLM: prompt
    tokens once, completion tokens summed over the choices), so it is split: the prompt
    tokens go to index 0 and the others get 0; the completion tokens are shared out in
    proportion to the tokens each choice streamed (``split_tokens``), so the per-choice
    counts always add up to the server's figure. A server that sends no ``usage`` object gets
    an *estimate* of one token per four characters of prompt and answer, and the results say
    ``usage_estimated``. With ``logprobs`` a result's ``mean_logprob`` is the mean of its
    streamed tokens' log-probabilities.

    Errors: a refused connection, HTTP 408/429/5xx and a connection broken mid-stream are
    retriable ``BackendError``s; other 4xx are not, and carry the server's own message; a
    failure after output started carries ``partial_output_tokens``.
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
        self._base, self._where = http_endpoint(tier, cfg.endpoint, "http://host:8000")
        self._limits = CallLimits(tier, cfg)
        self._owns_client = client is None
        self._client = client or pooled_client(cfg)

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
        key = api_key(self._tier, self._cfg.api_key_env)
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, request: SampleRequest, max_tokens: int) -> dict[str, Any]:
        messages: list[dict[str, str]] = [{"role": "user", "content": request.prompt}]
        hosted = self._cfg.dialect == "openai"
        body: dict[str, Any] = {
            "model": self._cfg.model,
            "messages": messages,
            ("max_completion_tokens" if hosted else "max_tokens"): max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.n > 1:
            body["n"] = request.n
        if request.stop:
            body["stop"] = list(request.stop)
        if request.logprobs:
            body["logprobs"] = True
        if request.continuation:
            if hosted:
                raise BackendError(
                    f"tier {self._tier!r} (dialect: openai) cannot continue a partial answer; "
                    "run strategies that need it (beam, think) on a self-hosted tier"
                )
            messages.append({"role": "assistant", "content": request.continuation})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    def _transport_error(
        self, exc: httpx.HTTPError, started: bool, partial: int = 0
    ) -> BackendError:
        what = "while streaming" if started else "before the response"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"tier {self._tier!r}: {self._where} timed out {what} ({type(exc).__name__})",
                retriable=isinstance(exc, httpx.ConnectTimeout),
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
                retriable=True,
                partial_output_tokens=partial,
            )
        return BackendError(
            f"tier {self._tier!r}: request to {self._where} failed ({type(exc).__name__})",
            retriable=isinstance(exc, httpx.TransportError),
        )

    async def _status_error(self, response: httpx.Response) -> BackendError:
        """An HTTP error status: 408, 429 and 5xx are worth retrying, other 4xx are not."""
        try:
            raw = await response.aread()
            text = raw[:4000].decode("utf-8", "replace")
        except httpx.HTTPError:
            text = ""
        body = excerpt(_server_message(text))
        status = response.status_code
        message = f"tier {self._tier!r}: {self._where} answered HTTP {status}" + (
            f": {body}" if body else ""
        )
        retriable = status in (408, 429) or status >= 500
        if status in (408, 504):
            return BackendTimeout(message, retriable=retriable)
        return BackendError(message, retriable=retriable)

    async def stream(
        self, request: SampleRequest
    ) -> AsyncGenerator[TextDelta | SampleResult, None]:
        """Stream ``request.n`` samples: text deltas tagged with their sample's ``index``,
        then one ``SampleResult`` per sample, in index order.

        Closing the generator early (``aclose()``, or cancelling the consuming task) cancels
        the server-side request and frees the concurrency slot.
        """
        if not 1 <= request.n <= self.max_n:
            raise BackendError(
                f"tier {self._tier!r}: n={request.n} samples per request is outside "
                f"1..{self.max_n} (n_per_request)"
            )
        if request.max_tokens < 1:
            raise BackendError(f"tier {self._tier!r}: max_tokens must be at least 1")
        max_tokens = min(request.max_tokens, self._cfg.max_output_tokens)
        deadline, budget = self._limits.deadline(request)
        headers = self._headers()
        choices = [_Choice() for _ in range(request.n)]
        usage: dict[str, Any] | None = None
        done = False
        async with self._limits.slot(deadline, budget):
            http_request = self._client.build_request(
                "POST",
                f"{self._base}/v1/chat/completions",
                json=self._body(request, max_tokens),
                headers=headers,
                timeout=httpx.Timeout(
                    max(0.001, self._limits.remaining(deadline)),
                    connect=min(CONNECT_TIMEOUT_S, max(0.001, self._limits.remaining(deadline))),
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
                    streamed = sum(c.tokens for c in choices)
                    try:
                        line = await self._limits.within(
                            deadline, budget, anext(lines), f"streaming from {self._where}"
                        )
                    except StopAsyncIteration:
                        break
                    except BackendError as exc:
                        exc.partial_output_tokens = max(exc.partial_output_tokens, streamed)
                        raise
                    except httpx.HTTPError as exc:
                        raise self._transport_error(exc, True, streamed) from None
                    payload = self._data(line)
                    if payload is None:
                        continue
                    if payload == "[DONE]":
                        done = True
                        break
                    chunk = self._chunk(payload, streamed)
                    if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
                        usage = chunk["usage"]
                    entries = chunk.get("choices")
                    for raw in entries if isinstance(entries, list) else []:
                        index = raw.get("index", 0) if isinstance(raw, dict) else None
                        if not isinstance(index, int) or not 0 <= index < request.n:
                            continue
                        content = choices[index].add(raw)
                        if content:
                            yield TextDelta(content, index=index)
            finally:
                await response.aclose()
        if not done and any(c.finish is None for c in choices):
            raise BackendError(
                f"tier {self._tier!r}: stream from {self._where} ended before the answer "
                "was complete",
                retriable=True,
                partial_output_tokens=sum(c.tokens for c in choices),
            )
        for result in self._results(request, choices, usage):
            yield result

    @staticmethod
    def _data(line: str) -> str | None:
        """The payload of an SSE ``data:`` line; ``None`` for comments, other fields, blanks."""
        if not line.startswith("data:"):
            return None
        return line[5:].strip()

    def _chunk(self, payload: str, streamed: int) -> dict[str, Any]:
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(
                f"tier {self._tier!r}: {self._where} sent a malformed stream chunk",
                partial_output_tokens=streamed,
            ) from None
        if not isinstance(chunk, dict):
            raise BackendError(
                f"tier {self._tier!r}: {self._where} sent a malformed stream chunk",
                partial_output_tokens=streamed,
            )
        if chunk.get("error"):
            err = chunk["error"]
            detail = err.get("message", "") if isinstance(err, dict) else str(err)
            raise BackendError(
                f"tier {self._tier!r}: {self._where} reported an error mid-stream: "
                f"{str(detail)[:EXCERPT_CHARS]}",
                retriable=_retriable_stream_error(err),
                partial_output_tokens=streamed,
            )
        return chunk

    def _results(
        self, request: SampleRequest, choices: list[_Choice], usage: dict[str, Any] | None
    ) -> list[SampleResult]:
        """One result per choice, with the server's usage split among them (class docstring);
        a choice counts one streamed token per content chunk, or per log-probability entry
        when those were asked for."""
        prompt_tokens = completion_tokens = None
        if usage:
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            estimated = False
            inputs = prompt_tokens
            outputs = split_tokens(completion_tokens, [c.tokens for c in choices])
        else:
            log.warning(
                "tier %r: %s sent no usage; estimating 4 characters a token",
                self._tier,
                self._where,
            )
            estimated = True
            inputs = estimate_tokens(request.prompt + request.continuation)
            outputs = [estimate_tokens(c.text) for c in choices]
        return [
            SampleResult(
                c.text,
                inputs if i == 0 else 0,
                outputs[i],
                c.finish or "stop",
                index=i,
                usage_estimated=estimated,
                mean_logprob=c.mean_logprob if request.logprobs else None,
            )
            for i, c in enumerate(choices)
        ]

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

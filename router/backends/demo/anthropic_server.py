"""A demo server speaking the Anthropic Messages API, answering with simulated models (aiohttp).

Serves ``GET /v1/models``, ``GET /v1/models/{model_id}`` and ``POST /v1/messages`` (with and
without ``stream``) for the simulated models of ``answers.DEMO_OPENAI_MODELS`` (each with
its own skill and latency; ``demo-premium`` is the one the demo's premium tier uses). No
language model runs here: replies come from ``answers.generate``.

What it honours, as the real API does: the ``anthropic-version`` header (required), the
``x-api-key`` header (when the server was given a key), ``max_tokens`` (required),
``temperature`` in [0, 1], ``stop_sequences`` (the text stops before the first one, which is
reported in ``stop_sequence``), and an assistant message last in ``messages`` as a prefill
the reply continues from (it may not end in whitespace). The API has no seed: at
temperature 0 the reply is the greedy one; above it the n-th request with the same prompt
gets the sample of seed n, so repeated requests are independent samples. Token counts come
from ``answers.count_tokens``.

Faults for tests, by a marker in the prompt (see ``answers``) or by ``DemoModel.fault``:

* ``[demo-fault:unavailable]`` or a model with the ``unavailable`` fault: HTTP 529
  ``overloaded_error`` (the API's "try again later");
* ``[demo-fault:http-<status>]``: that HTTP status with the API's error type for it;
* ``[demo-fault:flaky-<n>]``: the first n requests with this prompt get HTTP 529, later ones
  are answered (the count is kept per server and prompt);
* ``[demo-fault:mid-stream]``: a few text deltas, then an ``error`` event
  (``overloaded_error``) and the end of the stream;
* ``[demo-fault:slow]``: a few text deltas, then one every ``answers.SLOW_FAULT_TOKEN_S`` s;
* a model with the ``disconnect`` fault drops the connection mid-stream, one with the
  ``no-usage`` fault sends no token counts.

Run: ``python -m router.backends.demo.anthropic_server --port P [--api-key-env VAR]``, or
``await start_demo_anthropic_server(host, port, models)`` inside a running event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
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
)

_MODELS_KEY = web.AppKey("models", dict[str, DemoModel])
_API_KEY = web.AppKey("api_key", str)
_FLAKY_KEY = web.AppKey("flaky", Counter[str])
_SAMPLES_KEY = web.AppKey("samples", Counter[str])
_PER_MESSAGE_TOKENS = 3
_REQUEST_OVERHEAD_TOKENS = 5
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_CREATED_AT = "2024-01-01T00:00:00Z"


def _error(status: int, message: str) -> web.Response:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def _model_object(model: DemoModel) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model.name,
        "display_name": f"{model.name} (simulated)",
        "created_at": _CREATED_AT,
    }


def _models(request: web.Request) -> dict[str, DemoModel]:
    return request.app[_MODELS_KEY]


def _listed(models: Mapping[str, DemoModel]) -> list[DemoModel]:
    return [m for m in models.values() if m.fault != "unavailable"]


async def _list_models(request: web.Request) -> web.Response:
    listed = _listed(_models(request))
    data = [_model_object(m) for m in listed]
    return web.json_response(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def _get_model(request: web.Request) -> web.Response:
    name = request.match_info["model_id"]
    for model in _listed(_models(request)):
        if model.name == name:
            return web.json_response(_model_object(model))
    return _error(404, f"model: {name}")


def _content_text(content: Any) -> str | None:
    """The text of a message's ``content`` (a string or a list of text blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    return None


@dataclass(frozen=True)
class _Ask:
    """One validated Messages request."""

    model: DemoModel
    prompt: str
    prefill: str
    input_tokens: int
    max_tokens: int
    temperature: float
    stop_sequences: tuple[str, ...]
    stream: bool


def _parse(body: Any, models: Mapping[str, DemoModel]) -> _Ask | web.Response:
    """The request's fields, or the error reply the real API would give."""
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return _error(400, "model: Field required")
    model = models.get(name)
    if model is None:
        return _error(404, f"model: {name}")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return _error(400, "max_tokens: Field required (an integer)")
    if max_tokens < 1:
        return _error(400, "max_tokens: must be at least 1")
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return _error(400, "temperature: must be a number")
    if not 0.0 <= temperature <= 1.0:
        return _error(400, "temperature: must be between 0 and 1")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        return _error(400, "stop_sequences: must be a list of non-empty strings")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages: at least one message is required")
    texts: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        text = _content_text(m.get("content")) if isinstance(m, dict) else None
        if role not in ("user", "assistant") or text is None:
            return _error(400, f"messages.{i}: needs role 'user' or 'assistant' and text content")
        if texts and texts[-1][0] == role:
            return _error(400, f"messages.{i}: roles must alternate between user and assistant")
        texts.append((role, text))
    if texts[0][0] != "user":
        return _error(400, "messages.0: the first message must use the 'user' role")
    prefill = ""
    if texts[-1][0] == "assistant":
        prefill = texts[-1][1]
        if prefill != prefill.rstrip():
            return _error(400, "final assistant content cannot end with trailing whitespace")
    prompt = next(text for role, text in reversed(texts) if role == "user")
    input_tokens = _REQUEST_OVERHEAD_TOKENS + sum(
        _PER_MESSAGE_TOKENS + count_tokens(text) for _, text in texts
    )
    return _Ask(
        model=model,
        prompt=prompt,
        prefill=prefill,
        input_tokens=input_tokens,
        max_tokens=max_tokens,
        temperature=float(temperature),
        stop_sequences=tuple(stops),
        stream=bool(body.get("stream")),
    )


def _fault(request: web.Request, ask: _Ask) -> tuple[str | None, web.Response | None]:
    """The fault this request triggers: ``(streaming fault, error reply to send now)``."""
    if FAULT_UNAVAILABLE in ask.prompt or ask.model.fault == "unavailable":
        return None, _error(529, f"{ask.model.name} is overloaded (simulated)")
    status = fault_http_status(ask.prompt)
    if status is not None and 400 <= status <= 599:
        return None, _error(status, f"simulated HTTP {status} for {ask.model.name}")
    flaky = flaky_failures(ask.prompt)
    if flaky:
        seen = request.app[_FLAKY_KEY]
        seen[ask.prompt] += 1
        if seen[ask.prompt] <= flaky:
            return None, _error(
                529, f"{ask.model.name} is overloaded (simulated, attempt {seen[ask.prompt]})"
            )
    if FAULT_MID_STREAM in ask.prompt:
        return "mid-stream", None
    if FAULT_SLOW in ask.prompt:
        return "slow", None
    if ask.model.fault in ("disconnect", "no-usage"):
        return ask.model.fault, None
    return None, None


def _generate(request: web.Request, ask: _Ask) -> Generation:
    """The simulated model's reply. The API has no seed: at temperature 0 the answer is the
    greedy one; above it the n-th request with the same prompt gets the sample of seed n."""
    seed = 0
    if ask.temperature > 0:
        samples = request.app[_SAMPLES_KEY]
        seed = samples[ask.prompt]
        samples[ask.prompt] += 1
    return generate(
        ask.prompt,
        skill=ask.model.skill_for(ask.prompt),
        seed=seed,
        temperature=ask.temperature,
        max_tokens=ask.max_tokens,
        stop=ask.stop_sequences,
        continuation=ask.prefill,
    )


def _stop_reason(reply: Generation) -> str:
    if reply.stopped_by is not None:
        return "stop_sequence"
    return "max_tokens" if reply.finish == "length" else "end_turn"


def _message_id(ask: _Ask) -> str:
    digest = hashlib.blake2b(
        f"{ask.model.name}|{ask.prompt}|{ask.prefill}|{ask.temperature}".encode(), digest_size=8
    )
    return f"msg_demo_{digest.hexdigest()}"


async def _messages(request: web.Request) -> web.StreamResponse:
    if not request.headers.get("anthropic-version"):
        return _error(400, "anthropic-version: header is required")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON")
    ask = _parse(body, _models(request))
    if isinstance(ask, web.Response):
        return ask
    fault, refusal = _fault(request, ask)
    if refusal is not None:
        return refusal
    reply = _generate(request, ask)
    if ask.stream:
        return await _stream(request, ask, reply, fault)
    await asyncio.sleep(
        (ask.model.first_token_ms + _per_token_ms(ask, reply) * reply.output_tokens) / 1000.0
    )
    if fault is not None and fault != "no-usage":
        return _error(529, f"{ask.model.name} is overloaded (simulated)")
    message: dict[str, Any] = {
        "id": _message_id(ask),
        "type": "message",
        "role": "assistant",
        "model": ask.model.name,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": _stop_reason(reply),
        "stop_sequence": reply.stopped_by,
        "usage": {"input_tokens": ask.input_tokens, "output_tokens": reply.output_tokens},
    }
    if fault == "no-usage":
        del message["usage"]
    return web.json_response(message)


def _per_token_ms(ask: _Ask, reply: Generation) -> float:
    return ask.model.per_token_ms * (SLOW_SAMPLE_FACTOR if reply.slow else 1.0)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _stream(
    request: web.Request, ask: _Ask, reply: Generation, fault: str | None
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    usage = fault != "no-usage"
    start_message: dict[str, Any] = {
        "id": _message_id(ask),
        "type": "message",
        "role": "assistant",
        "model": ask.model.name,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage:
        start_message["usage"] = {"input_tokens": ask.input_tokens, "output_tokens": 0}
    try:
        await asyncio.sleep(ask.model.first_token_ms / 1000.0)
        await response.write(_sse({"type": "message_start", "message": start_message}))
        await response.write(
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
        )
        await response.write(_sse({"type": "ping"}))
        for i, piece in enumerate(reply.pieces):
            if i == FAULT_AFTER_TOKENS and fault == "disconnect":
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return response
            if i == FAULT_AFTER_TOKENS and fault == "mid-stream":
                error = {"type": "overloaded_error", "message": "Overloaded (simulated)"}
                await response.write(_sse({"type": "error", "error": error}))
                await response.write_eof()
                return response
            if i and fault == "slow" and i >= FAULT_AFTER_TOKENS:
                await asyncio.sleep(SLOW_FAULT_TOKEN_S)
            elif i:
                await asyncio.sleep(_per_token_ms(ask, reply) / 1000.0)
            if not piece:  # a token inside an excluded stop sequence
                continue
            delta = {"type": "text_delta", "text": piece}
            await response.write(_sse({"type": "content_block_delta", "index": 0, "delta": delta}))
        await response.write(_sse({"type": "content_block_stop", "index": 0}))
        end: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": reply.stopped_by},
        }
        if usage:
            end["usage"] = {"output_tokens": reply.output_tokens}
        await response.write(_sse(end))
        await response.write(_sse({"type": "message_stop"}))
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return response


def build_app(
    models: Mapping[str, DemoModel] | None = None, *, api_key: str | None = None
) -> web.Application:
    """The aiohttp application; ``api_key`` set means every request needs that ``x-api-key``."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        expected = request.app[_API_KEY]
        if expected and request.headers.get("x-api-key") != expected:
            return _error(401, "invalid x-api-key (demo server)")
        result: web.StreamResponse = await handler(request)
        return result

    app = web.Application(middlewares=[auth])
    app[_MODELS_KEY] = dict(models if models is not None else DEMO_OPENAI_MODELS)
    app[_API_KEY] = api_key or ""
    app[_FLAKY_KEY] = Counter()
    app[_SAMPLES_KEY] = Counter()
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model_id}", _get_model)
    app.router.add_post("/v1/messages", _messages)
    return app


async def start_demo_anthropic_server(
    host: str,
    port: int,
    models: Mapping[str, DemoModel] | None = None,
    *,
    api_key: str | None = None,
) -> web.AppRunner:
    """Serve the demo API on ``host:port`` in the running loop; ``runner.cleanup()`` stops it."""
    runner = web.AppRunner(build_app(models, api_key=api_key), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
    await site.start()
    return runner


async def _serve(host: str, port: int, api_key: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = await start_demo_anthropic_server(host, port, api_key=api_key)
    print(
        f"demo anthropic server ready: http://{host}:{port} "
        f"models={','.join(m.name for m in _listed(DEMO_OPENAI_MODELS))} "
        f"key check={'on' if api_key else 'off'}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.backends.demo.anthropic_server",
        description="Serve simulated (demo) models over the Anthropic Messages API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--api-key-env",
        default=None,
        help="name of an environment variable holding the x-api-key clients must send",
    )
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            parser.error(f"environment variable {args.api_key_env} is not set")
    asyncio.run(_serve(args.host, args.port, api_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())

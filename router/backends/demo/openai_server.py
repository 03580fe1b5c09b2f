"""A demo OpenAI-compatible server answering with simulated models (aiohttp).

Serves ``GET /v1/models`` (models with the ``unavailable`` fault are not listed) and
``POST /v1/chat/completions`` (with and without ``stream``, ``stream_options.include_usage``,
``n`` = 1 only) for several simulated models at once,
each with its own skill and latency (``answers.DEMO_OPENAI_MODELS``). The answers come from
``answers.simulate``; no language model runs here.

Fault injection for tests, by model (``DemoModel.fault``), by the ``X-Demo-Fault`` request
header (``unavailable`` | ``disconnect`` | ``no-usage``) or by a marker in the prompt
(``answers.FAULT_UNAVAILABLE``, ``answers.FAULT_MID_STREAM``):

* ``unavailable``: HTTP 503 with an OpenAI-style error body;
* ``disconnect``: a few tokens are streamed, then the connection is dropped;
* ``no-usage``: the stream carries no usage chunk.

Run: ``python -m router.backends.demo.openai_server --port P``, or
``await start_demo_openai_server(host, port, models)`` inside a running event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from router.backends.demo.answers import (
    DEMO_OPENAI_MODELS,
    FAULT_AFTER_TOKENS,
    FAULT_MID_STREAM,
    FAULT_UNAVAILABLE,
    DemoModel,
    count_tokens,
    simulate,
)

_MODELS_KEY = web.AppKey("models", dict)
_API_KEY = web.AppKey("api_key", str)
_FAULTS = ("unavailable", "disconnect", "no-usage")
_CHAT_OVERHEAD_TOKENS = 3
_PER_MESSAGE_TOKENS = 4


def _error(status: int, message: str, type_: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _prompt_and_tokens(messages: list[Any]) -> tuple[str, int]:
    """The last user message (what the model answers) and the tokens of the whole chat."""
    prompt = ""
    total = _CHAT_OVERHEAD_TOKENS
    for m in messages:
        text = _content_text(m.get("content"))
        total += _PER_MESSAGE_TOKENS + count_tokens(text)
        if m.get("role") == "user":
            prompt = text
    return prompt, total


def _fault(model: DemoModel, request: web.Request, prompt: str) -> str | None:
    header = request.headers.get("X-Demo-Fault")
    if header in _FAULTS:
        return header
    if FAULT_UNAVAILABLE in prompt:
        return "unavailable"
    if FAULT_MID_STREAM in prompt:
        return "disconnect"
    return model.fault


async def _list_models(request: web.Request) -> web.Response:
    models: dict[str, DemoModel] = request.app[_MODELS_KEY]
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "ttc-router-demo"}
        for name, model in models.items()
        if model.fault != "unavailable"
    ]
    return web.json_response({"object": "list", "data": data})


def _int_field(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is not None:
            return int(value)
    return None


async def _chat(request: web.Request) -> web.StreamResponse:
    models: dict[str, DemoModel] = request.app[_MODELS_KEY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object", "invalid_request_error")
    name = body.get("model")
    model = models.get(name) if isinstance(name, str) else None
    if model is None:
        return _error(
            404, f"The model '{name}' does not exist", "invalid_request_error", "model_not_found"
        )
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        return _error(
            400, "'messages' must be a non-empty list of objects", "invalid_request_error"
        )
    try:
        n = _int_field(body, "n") or 1
        max_tokens = _int_field(body, "max_completion_tokens", "max_tokens")
        seed = _int_field(body, "seed") or 0
        temperature = float(body.get("temperature", 1.0))
    except (TypeError, ValueError):
        return _error(
            400, "n, max_tokens, seed and temperature must be numbers", "invalid_request_error"
        )
    if n != 1:
        return _error(400, "the demo server supports n=1 only", "invalid_request_error")
    if max_tokens is not None and max_tokens < 1:
        return _error(400, "max_tokens must be at least 1", "invalid_request_error")
    prompt, prompt_tokens = _prompt_and_tokens(messages)
    fault = _fault(model, request, prompt)
    if fault == "unavailable":
        return _error(
            503, f"model {model.name} is temporarily unavailable (simulated)", "server_error"
        )

    answer = simulate(prompt, skill=model.skill, seed=seed, temperature=temperature)
    tokens, finish = answer.limited(max_tokens if max_tokens is not None else len(answer.tokens))
    digest = hashlib.blake2b(f"{name}|{prompt}|{seed}|{temperature}".encode(), digest_size=8)
    completion_id = f"chatcmpl-demo-{digest.hexdigest()}"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(tokens),
        "total_tokens": prompt_tokens + len(tokens),
    }
    if not body.get("stream"):
        await asyncio.sleep((model.first_token_ms + model.per_token_ms * len(tokens)) / 1000.0)
        if fault == "disconnect":
            _drop(request)
            raise asyncio.CancelledError
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )
    stream_options = body.get("stream_options") or {}
    include_usage = bool(stream_options.get("include_usage")) and fault != "no-usage"
    return await _stream(
        request, model, completion_id, tokens, finish, usage if include_usage else None, fault
    )


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _stream(
    request: web.Request,
    model: DemoModel,
    completion_id: str,
    tokens: Sequence[str],
    finish: str,
    usage: Mapping[str, int] | None,
    fault: str | None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model.name,
            "choices": choices,
        }
        if extra:
            obj.update(extra)
        return f"data: {json.dumps(obj)}\n\n".encode()

    try:
        await asyncio.sleep(model.first_token_ms / 1000.0)
        await response.write(
            chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        )
        for i, tok in enumerate(tokens):
            if fault == "disconnect" and i == FAULT_AFTER_TOKENS:
                _drop(request)
                return response
            if i:
                await asyncio.sleep(model.per_token_ms / 1000.0)
            await response.write(
                chunk([{"index": 0, "delta": {"content": tok}, "finish_reason": None}])
            )
        await response.write(chunk([{"index": 0, "delta": {}, "finish_reason": finish}]))
        if usage is not None:
            await response.write(chunk([], {"usage": dict(usage)}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return response


def build_app(
    models: Mapping[str, DemoModel] | None = None, *, api_key: str | None = None
) -> web.Application:
    """The aiohttp application; ``api_key`` set means every request needs that bearer key."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        expected = request.app[_API_KEY]
        if expected and request.headers.get("Authorization") != f"Bearer {expected}":
            return _error(
                401,
                "Incorrect API key provided (demo server)",
                "invalid_request_error",
                "invalid_api_key",
            )
        result: web.StreamResponse = await handler(request)
        return result

    app = web.Application(middlewares=[auth])
    app[_MODELS_KEY] = dict(models if models is not None else DEMO_OPENAI_MODELS)
    app[_API_KEY] = api_key or ""
    app.router.add_get("/v1/models", _list_models)
    app.router.add_post("/v1/chat/completions", _chat)
    return app


async def start_demo_openai_server(
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
    runner = await start_demo_openai_server(host, port, api_key=api_key)
    print(
        f"demo openai server ready: http://{host}:{port} models={','.join(DEMO_OPENAI_MODELS)}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.backends.demo.openai_server",
        description="Serve simulated (demo) models over an OpenAI-compatible API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--api-key-env",
        default=None,
        help="name of an environment variable holding the bearer key clients must send",
    )
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env:
        import os

        api_key = os.environ.get(args.api_key_env) or None
        if api_key is None:
            parser.error(f"environment variable {args.api_key_env} is not set")
    asyncio.run(_serve(args.host, args.port, api_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())

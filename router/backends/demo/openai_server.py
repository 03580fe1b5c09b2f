"""A demo OpenAI-compatible server answering with simulated models (aiohttp).

Serves ``GET /v1/models`` (models with the ``unavailable`` fault are not listed),
``POST /v1/chat/completions`` and ``GET /demo/stats`` for several simulated models at once,
each with its own skill and latency (``answers.DEMO_OPENAI_MODELS``). The answers come from
``answers.generate``; no language model runs here.

Chat completions honour, as vLLM does: ``stream`` with ``stream_options.include_usage``;
``n`` choices (choice ``i`` is the sample of seed ``seed + i``; chunks carry one choice each,
and the usage counts the prompt once and the completion tokens of all choices); ``stop`` (a
string or a list; the text ends before it); ``logprobs: true`` (one made-up log-probability
per token, higher for right answers); ``seed`` and ``temperature``; and an assistant prefix
to continue: a last ``assistant`` message with ``continue_final_message: true`` and
``add_generation_prompt: false``.

Fault injection for tests, by model (``DemoModel.fault``), by the ``X-Demo-Fault`` request
header (``unavailable`` | ``disconnect`` | ``no-usage``) or by a marker in the prompt (see
``answers``):

* ``unavailable`` / ``[demo-fault:unavailable]``: HTTP 503 with an OpenAI-style error body;
* ``[demo-fault:http-NNN]``: HTTP NNN with an error body;
* ``[demo-fault:flaky-N]``: HTTP 503 for the first N requests with exactly this prompt;
* ``disconnect`` / ``[demo-fault:mid-stream]``: a few tokens are streamed, then the
  connection is dropped;
* ``[demo-fault:slow]`` and ``@slow`` scripted samples: streamed slowly;
* ``no-usage``: the stream carries no usage chunk.

``GET /demo/stats`` reports what the server saw, so tests can check cancellation from the
server's side: counts of requests by outcome (``completed``, ``cancelled`` when the client
went away mid-stream, ``dropped`` by a fault, ``rejected`` with an error status) and the
recent requests with their prompt, ``n``, outcome and ``tokens_streamed``.

Run: ``python -m router.backends.demo.openai_server --port P``, or
``await start_demo_openai_server(host, port, models)`` inside a running event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
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

_MODELS_KEY = web.AppKey("models", Mapping[str, DemoModel])
_API_KEY = web.AppKey("api_key", str)
_FAULTS = ("unavailable", "disconnect", "no-usage")
_CHAT_OVERHEAD_TOKENS = 3
_PER_MESSAGE_TOKENS = 4
_MAX_N = 64
_RECENT = 500
_ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit"}


@dataclass
class RequestRecord:
    """One chat-completion request as the server saw it."""

    id: int
    model: str
    prompt: str
    n: int
    stream: bool
    outcome: str = "running"
    tokens_streamed: int = 0
    status: int = 200


class DemoStats:
    """Counts of requests by outcome, and the most recent requests."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.recent: deque[RequestRecord] = deque(maxlen=_RECENT)
        self.flaky_seen: Counter[str] = Counter()

    def start(self, model: str, prompt: str, n: int, stream: bool) -> RequestRecord:
        record = RequestRecord(next(self._ids), model, prompt[:300], n, stream)
        self.recent.append(record)
        return record

    def as_json(self) -> dict[str, Any]:
        outcomes = Counter(r.outcome for r in self.recent)
        return {
            "requests": len(self.recent),
            **{k: outcomes.get(k, 0) for k in ("completed", "cancelled", "dropped", "rejected")},
            "running": outcomes.get("running", 0),
            "recent": [asdict(r) for r in self.recent],
        }


_STATS_KEY = web.AppKey("stats", DemoStats)


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
    models = request.app[_MODELS_KEY]
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "ttc-router-demo"}
        for name, model in models.items()
        if model.fault != "unavailable"
    ]
    return web.json_response({"object": "list", "data": data})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATS_KEY].as_json())


def _int_field(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is not None:
            return int(value)
    return None


@dataclass(frozen=True)
class _Ask:
    """A validated chat-completion request."""

    model: DemoModel
    prompt: str
    prompt_tokens: int
    continuation: str
    n: int
    max_tokens: int | None
    seed: int
    temperature: float
    stop: tuple[str, ...]
    logprobs: bool
    stream: bool
    include_usage: bool


def _parse(body: Any, models: Mapping[str, DemoModel]) -> _Ask | web.Response:
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
    if not 1 <= n <= _MAX_N:
        return _error(400, f"n must be between 1 and {_MAX_N}", "invalid_request_error")
    if max_tokens is not None and max_tokens < 1:
        return _error(400, "max_tokens must be at least 1", "invalid_request_error")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        return _error(400, "stop must be a string or a list of strings", "invalid_request_error")
    continuation = ""
    if body.get("continue_final_message"):
        if body.get("add_generation_prompt", True):
            return _error(
                400,
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                "invalid_request_error",
            )
        if messages[-1].get("role") != "assistant":
            return _error(
                400,
                "continue_final_message needs an assistant message last",
                "invalid_request_error",
            )
        continuation = _content_text(messages[-1].get("content"))
    prompt, prompt_tokens = _prompt_and_tokens(messages)
    stream_options = body.get("stream_options") or {}
    return _Ask(
        model=model,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        continuation=continuation,
        n=n,
        max_tokens=max_tokens,
        seed=seed,
        temperature=temperature,
        stop=tuple(stop),
        logprobs=bool(body.get("logprobs")),
        stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
    )


def _refusal(ask: _Ask, fault: str | None, stats: DemoStats) -> web.Response | None:
    """The error status a fault asks for, if any."""
    name = ask.model.name
    if fault == "unavailable":
        return _error(503, f"model {name} is temporarily unavailable (simulated)", "server_error")
    status = fault_http_status(ask.prompt)
    if status is not None and status >= 400:
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
        return _error(status, f"simulated HTTP {status} for {name} (fault in the prompt)", kind)
    flaky = flaky_failures(ask.prompt)
    if flaky:
        stats.flaky_seen[ask.prompt] += 1
        attempt = stats.flaky_seen[ask.prompt]
        if attempt <= flaky:
            return _error(
                503,
                f"model {name} is temporarily unavailable (simulated, attempt {attempt} of "
                f"{flaky} that fail)",
                "server_error",
            )
    return None


async def _chat(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON", "invalid_request_error")
    ask = _parse(body, request.app[_MODELS_KEY])
    if isinstance(ask, web.Response):
        return ask
    stats = request.app[_STATS_KEY]
    record = stats.start(ask.model.name, ask.prompt, ask.n, ask.stream)
    fault = _fault(ask.model, request, ask.prompt)
    refusal = _refusal(ask, fault, stats)
    if refusal is not None:
        record.outcome, record.status = "rejected", refusal.status
        return refusal

    gens = [
        generate(
            ask.prompt,
            skill=ask.model.skill_for(ask.prompt),
            seed=ask.seed + i,
            temperature=ask.temperature,
            max_tokens=ask.max_tokens,
            stop=ask.stop,
            continuation=ask.continuation,
        )
        for i in range(ask.n)
    ]
    digest = hashlib.blake2b(
        f"{ask.model.name}|{ask.prompt}|{ask.seed}|{ask.temperature}".encode(), digest_size=8
    )
    completion_id = f"chatcmpl-demo-{digest.hexdigest()}"
    completion_tokens = sum(g.output_tokens for g in gens)
    usage = {
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": ask.prompt_tokens + completion_tokens,
    }
    if not ask.stream:
        return await _whole(request, ask, gens, completion_id, usage, fault, record)
    include_usage = ask.include_usage and fault != "no-usage"
    return await _stream(
        request, ask, gens, completion_id, usage if include_usage else None, fault, record
    )


def _logprobs_json(pieces: Sequence[str], logprobs: Sequence[float]) -> dict[str, Any]:
    return {
        "content": [
            {"token": p, "logprob": lp, "bytes": list(p.encode("utf-8")), "top_logprobs": []}
            for p, lp in zip(pieces, logprobs, strict=True)
        ]
    }


async def _whole(
    request: web.Request,
    ask: _Ask,
    gens: Sequence[Generation],
    completion_id: str,
    usage: Mapping[str, int],
    fault: str | None,
    record: RequestRecord,
) -> web.StreamResponse:
    longest = max(g.output_tokens for g in gens)
    await asyncio.sleep((ask.model.first_token_ms + ask.model.per_token_ms * longest) / 1000.0)
    if fault == "disconnect":
        record.outcome = "dropped"
        _drop(request)
        raise asyncio.CancelledError
    choices = []
    for i, g in enumerate(gens):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": g.text},
            "finish_reason": g.finish,
        }
        if ask.logprobs:
            choice["logprobs"] = _logprobs_json(g.pieces, g.logprobs)
        choices.append(choice)
    record.outcome = "completed"
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ask.model.name,
            "choices": choices,
            "usage": dict(usage),
        }
    )


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _schedule(ask: _Ask, gens: Sequence[Generation]) -> list[tuple[float, int, int]]:
    """``(seconds from the start, choice, token)`` of every token to stream, in order; the
    token ``-1`` of a choice is its finish chunk."""
    events = []
    for i, g in enumerate(gens):
        per_token = ask.model.per_token_ms / 1000.0 * (SLOW_SAMPLE_FACTOR if g.slow else 1.0)
        at = ask.model.first_token_ms / 1000.0
        for j in range(g.output_tokens):
            if j:
                slow = FAULT_SLOW in ask.prompt and j >= FAULT_AFTER_TOKENS
                at += SLOW_FAULT_TOKEN_S if slow else per_token
            events.append((at, i, j))
        events.append((at, i, -1))
    events.sort(key=lambda e: (e[0], e[1], e[2] < 0))
    return events


async def _stream(
    request: web.Request,
    ask: _Ask,
    gens: Sequence[Generation],
    completion_id: str,
    usage: Mapping[str, int] | None,
    fault: str | None,
    record: RequestRecord,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    created = int(time.time())
    loop = asyncio.get_running_loop()

    def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": ask.model.name,
            "choices": choices,
        }
        if extra:
            obj.update(extra)
        return f"data: {json.dumps(obj)}\n\n".encode()

    async def send(data: bytes) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        await response.write(data)

    started = loop.time()
    try:
        await asyncio.sleep(ask.model.first_token_ms / 1000.0)
        for i in range(ask.n):
            role = {"role": "assistant", "content": ""}
            await send(
                chunk([{"index": i, "delta": role, "logprobs": None, "finish_reason": None}])
            )
        for at, i, j in _schedule(ask, gens):
            pause = started + at - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            g = gens[i]
            if j < 0:
                await send(chunk([{"index": i, "delta": {}, "finish_reason": g.finish}]))
                continue
            if fault == "disconnect" and record.tokens_streamed == FAULT_AFTER_TOKENS:
                record.outcome = "dropped"
                _drop(request)
                return response
            piece = g.pieces[j]
            if not piece:
                continue  # a token inside an excluded stop string: nothing to show
            entry: dict[str, Any] = {"index": i, "delta": {"content": piece}, "finish_reason": None}
            entry["logprobs"] = _logprobs_json([piece], [g.logprobs[j]]) if ask.logprobs else None
            await send(chunk([entry]))
            record.tokens_streamed += 1
        if usage is not None:
            await send(chunk([], {"usage": dict(usage)}))
        await send(b"data: [DONE]\n\n")
        await response.write_eof()
        record.outcome = "completed"
    except (ConnectionResetError, ConnectionError):
        record.outcome = "cancelled"
    except asyncio.CancelledError:
        record.outcome = "cancelled"
        raise
    return response


def build_app(
    models: Mapping[str, DemoModel] | None = None, *, api_key: str | None = None
) -> web.Application:
    """The aiohttp application; ``api_key`` set means every request needs that bearer key."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        expected = request.app[_API_KEY]
        if (
            expected
            and request.path != "/demo/stats"
            and request.headers.get("Authorization") != f"Bearer {expected}"
        ):
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
    app[_STATS_KEY] = DemoStats()
    app.router.add_get("/v1/models", _list_models)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/demo/stats", _stats)
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

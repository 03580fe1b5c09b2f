"""A reward model served by Triton, used as a scorer by ``best@k`` and ``beam@w``.

The model takes ``prompt`` and ``response`` (BYTES [1]) and returns ``score`` (FP32 [1]),
as the demo's ``demo-reward`` and ``demo-prm`` do. If its config allows batching
(``max_batch_size`` > 0), the pairs go as one [B, 1] batch per request (several requests
when there are more than ``max_batch_size``); otherwise one request per pair, concurrently.
Calls use unary ``ModelInfer`` through ``tritonclient.grpc.aio``, imported on first use.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from router.errors import BackendError, BackendTimeout

DEFAULT_TIMEOUT_S = 10.0
"""Longest a scoring call may take when neither the scorer nor the caller sets a limit."""

_UNBATCHED_CONCURRENCY = 16
_EXCERPT = 200


def _one_line(text: str) -> str:
    """A server message shortened to one line: a traceback becomes its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in text:
        errors = [ln for ln in lines if "Error" in ln or "Exception" in ln]
        lines = errors[-1:] or lines[-1:]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"


def _status_name(exc: Any) -> str:
    """``UNAVAILABLE``, ``NOT_FOUND``, … from an ``InferenceServerException`` or a gRPC error."""
    if hasattr(exc, "status"):
        status = str(exc.status() or "")
    elif hasattr(exc, "code"):
        status = str(getattr(exc.code(), "name", ""))
    else:
        status = ""
    return status.rsplit(".", 1)[-1]


def _message(exc: Any) -> str:
    for attr in ("message", "details"):
        if hasattr(exc, attr):
            return str(getattr(exc, attr)() or "")
    return str(exc)


class TritonScorer:
    """Scores (prompt, response) pairs with a reward model on a Triton server.

    ``endpoint`` is the server's gRPC ``host:port``; ``model`` the reward model's name.
    One client is opened on first use and reused until ``aclose``. Failures raise
    ``BackendError`` naming the endpoint and model: retriable when Triton is unavailable,
    ``BackendTimeout`` past the time limit (the smaller of ``timeout_s`` and the caller's).
    """

    def __init__(self, endpoint: str, model: str, *, timeout_s: float | None = None) -> None:
        self._endpoint = endpoint.split("://", 1)[-1].rstrip("/")
        self._model = model
        self._timeout_s = timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S
        self._client: Any = None
        self._max_batch: int | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return f"triton:{self._model}"

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"TritonScorer(endpoint={self._endpoint!r}, model={self._model!r})"

    def _where(self) -> str:
        return f"scorer model {self._model!r} on Triton at {self._endpoint}"

    def _connect(self) -> Any:
        if self._closed:
            raise BackendError(f"{self._where()}: the scorer is closed")
        if self._client is None:
            from tritonclient.grpc.aio import InferenceServerClient

            self._client = InferenceServerClient(self._endpoint)
        return self._client

    def _wrap(self, exc: BaseException, doing: str) -> BackendError:
        status = _status_name(exc)
        detail = _one_line(_message(exc) or type(exc).__name__)
        if status == "DEADLINE_EXCEEDED":
            return BackendTimeout(f"{self._where()}: no answer in time while {doing}")
        if status == "UNAVAILABLE":
            return BackendError(
                f"{self._where()} is unavailable while {doing} ({detail})", retriable=True
            )
        if status == "NOT_FOUND":
            return BackendError(f"{self._where()}: the server has no such model ({detail})")
        prefix = f"{status}: " if status else ""
        return BackendError(f"{self._where()} failed while {doing}: {prefix}{detail}")

    async def _call(self, coro: Any, doing: str) -> Any:
        import grpc
        from tritonclient.utils import InferenceServerException

        try:
            return await coro
        except (InferenceServerException, grpc.RpcError) as exc:
            raise self._wrap(exc, doing) from None

    async def _batch_limit(self, deadline: float) -> int:
        if self._max_batch is None:
            response = await self._call(
                self._connect().get_model_config(self._model, client_timeout=_left(deadline)),
                "reading the model config",
            )
            self._max_batch = max(0, int(response.config.max_batch_size))
        return self._max_batch

    async def _infer(
        self, prompt: str, responses: Sequence[str], batched: bool, deadline: float
    ) -> list[float]:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        count = len(responses)
        shape = [count, 1] if batched else [1]
        prompts = np.array([prompt.encode("utf-8")] * count, dtype=np.object_).reshape(shape)
        texts = np.array([r.encode("utf-8") for r in responses], dtype=np.object_).reshape(shape)
        inputs = []
        for name, data in (("prompt", prompts), ("response", texts)):
            tensor = InferInput(name, shape, "BYTES")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        result = await self._call(
            self._connect().infer(
                self._model,
                inputs,
                outputs=[InferRequestedOutput("score")],
                client_timeout=_left(deadline),
            ),
            "scoring",
        )
        raw = result.as_numpy("score")
        if raw is None:
            raise BackendError(f"{self._where()} returned no 'score' output")
        scores = [float(v) for v in np.asarray(raw, dtype=np.float64).reshape(-1)]
        if len(scores) != count:
            raise BackendError(
                f"{self._where()} returned {len(scores)} scores for {count} responses"
            )
        if not all(math.isfinite(s) for s in scores):
            raise BackendError(f"{self._where()} returned a score that is not a finite number")
        return scores

    async def score(
        self, prompt: str, responses: Sequence[str], *, timeout_s: float | None
    ) -> list[float]:
        """One score per response, in order."""
        if not responses:
            return []
        limit = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        deadline = time.monotonic() + max(0.001, limit)
        max_batch = await self._batch_limit(deadline)
        if max_batch > 0:
            chunks = [
                list(responses[i : i + max_batch]) for i in range(0, len(responses), max_batch)
            ]
            parts = await _gather([self._infer(prompt, c, True, deadline) for c in chunks])
        else:
            gate = asyncio.Semaphore(_UNBATCHED_CONCURRENCY)

            async def one(response: str) -> list[float]:
                async with gate:
                    return await self._infer(prompt, [response], False, deadline)

            parts = await _gather([one(r) for r in responses])
        return [s for part in parts for s in part]

    async def aclose(self) -> None:
        """Close the client; later calls raise ``BackendError``."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


async def _gather(calls: Sequence[Any]) -> list[list[float]]:
    """Run the calls together; the first failure cancels the rest and is raised as is."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in calls]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]

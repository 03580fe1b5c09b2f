"""The gRPC ``ttc_router.v1.Router`` service: parse, authenticate, call the core, map errors."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from prometheus_client import CollectorRegistry

from router.api.auth import authenticate
from router.api.convert import budget_to_pb, decision_to_pb, final_to_pb, hints_from_pb
from router.api.errors import abort, status_for
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.metrics import ServiceMetrics
from router.config.tenants import TenantsConfig
from router.core.model_slot import ModelSlot
from router.core.service import Delta, GenerateResult, RouterCore, Tenant
from router.errors import (
    ConfigError,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    RouterError,
    Unauthenticated,
)

log = logging.getLogger("ttc_router.api")

SERVICE_NAME = "ttc_router.v1.Router"
M = TypeVar("M", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]
ADMIN_KEY_HEADER = "x-admin-key"


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request that failed to parse, so the handler can say why."""

    message_type: str
    reason: str


class ConcurrencyLimiter:
    """A permit count: at the limit a call is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    @contextmanager
    def permit(self) -> Iterator[None]:
        if self.inflight >= self.limit:
            raise Overloaded(
                f"the server is handling {self.limit} requests, its limit; retry with backoff"
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


def _parsed(request: M | Malformed) -> M:
    if isinstance(request, Malformed):
        raise InvalidRequest(
            f"the request is not a valid {request.message_type}: {request.reason} "
            "(string fields such as 'prompt' must be valid UTF-8)"
        )
    return request


class RouterServicer:
    def __init__(
        self,
        core: Callable[[], RouterCore],
        tenants: Callable[[], TenantsConfig],
        limiter: ConcurrencyLimiter,
        *,
        default_deadline_s: float,
        metrics: ServiceMetrics | None = None,
        models: ModelSlot | None = None,
        admin_key_sha256: str | None = None,
    ) -> None:
        self._core = core
        self._tenants = tenants
        self.limiter = limiter
        self.default_deadline_s = default_deadline_s
        self.models = models
        self.admin_key_sha256 = admin_key_sha256
        self.metrics = metrics or ServiceMetrics(CollectorRegistry())
        self.metrics.watch_drift(lambda: self._core().drift)

    @asynccontextmanager
    async def _observed(self, method: str, context: Context) -> AsyncIterator[None]:
        """Counts the call by its final status and maps any error to a gRPC status."""
        code = "OK"
        self.metrics.inflight.inc()
        try:
            yield
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = status_for(exc).name if isinstance(exc, RouterError) else "INTERNAL"
            await abort(context, exc)
            raise
        finally:
            self.metrics.inflight.dec()
            self.metrics.calls.labels(method, code).inc()

    def _observe_final(self, final: GenerateResult) -> None:
        arm = final.decision.arm
        m = self.metrics
        m.decisions.labels(arm).inc()
        m.cost_micros.labels(arm).inc(final.cost_micros)
        m.tokens.labels(arm, "input").inc(final.input_tokens)
        m.tokens.labels(arm, "output").inc(final.output_tokens)
        m.predicted_p.labels(arm).inc(final.decision.chosen.p_success)
        m.latency.labels(arm).observe(final.latency_ms / 1000)

    def _tenant(self, context: Context) -> Tenant:
        metadata = [(str(k), v) for k, v in context.invocation_metadata() or ()]
        return authenticate(metadata, self._tenants())

    def _timeout(self, context: Context) -> float:
        left = context.time_remaining()
        if left is None:
            return self.default_deadline_s
        return min(float(left), self.default_deadline_s)

    async def Route(
        self, request: pb.RouteRequest | Malformed, context: Context
    ) -> pb.RouteResponse:
        async with self._observed("Route", context):
            req = _parsed(request)
            tenant = self._tenant(context)
            with self.limiter.permit():
                res = await self._core().route(
                    tenant,
                    req.prompt,
                    hints_from_pb(req.hints),
                    request_id=req.request_id,
                    reserve=req.reserve,
                )
            return pb.RouteResponse(
                decision=decision_to_pb(res.decision),
                reserved=res.reserved,
                budget_remaining_micros=res.remaining_micros,
            )
        raise AssertionError("unreachable")  # _observed re-raises every error

    async def Generate(
        self, request: pb.GenerateRequest | Malformed, context: Context
    ) -> AsyncIterator[pb.GenerateResponse]:
        async with self._observed("Generate", context):
            req = _parsed(request)
            tenant = self._tenant(context)
            with self.limiter.permit():
                stream = self._core().generate(
                    tenant,
                    req.prompt,
                    hints_from_pb(req.hints),
                    request_id=req.request_id,
                    timeout_s=self._timeout(context),
                )
                try:
                    async for event in stream:
                        if isinstance(event, Delta):
                            yield pb.GenerateResponse(delta=event.text)
                        else:
                            self._observe_final(event)
                            yield final_to_pb(event)
                finally:
                    await stream.aclose()

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest | Malformed, context: Context
    ) -> pb.RecordOutcomeResponse:
        async with self._observed("RecordOutcome", context):
            req = _parsed(request)
            tenant = self._tenant(context)
            await self._core().record_outcome(tenant, req.decision_id, req.score)
            return pb.RecordOutcomeResponse()
        raise AssertionError("unreachable")

    async def GetBudget(
        self, request: pb.GetBudgetRequest | Malformed, context: Context
    ) -> pb.GetBudgetResponse:
        async with self._observed("GetBudget", context):
            _parsed(request)
            tenant = self._tenant(context)
            return budget_to_pb(tenant.name, await self._core().budget_view(tenant))
        raise AssertionError("unreachable")

    async def ReloadModel(
        self, request: pb.ReloadModelRequest | Malformed, context: Context
    ) -> pb.ReloadModelResponse:
        """Admin: serve a registered model version now, or re-read the promoted one."""
        async with self._observed("ReloadModel", context):
            req = _parsed(request)
            metadata = [(str(k), v) for k, v in context.invocation_metadata() or ()]
            authenticate_admin(metadata, self.admin_key_sha256)
            if self.models is None:
                raise ConfigError(
                    "this server serves a fixed model directory; start it with "
                    "TTC_MODEL_REGISTRY set to reload models"
                )
            version = req.version if req.HasField("version") else None
            if version is not None and not version.strip():
                raise InvalidRequest(
                    "version is empty; name a registered version, or leave it unset to "
                    "re-read the registry's promoted version"
                )
            result = await self.models.reload(version, reason=req.reason or "ReloadModel call")
            return pb.ReloadModelResponse(
                model_version=result.model_version, previous_version=result.previous_version
            )
        raise AssertionError("unreachable")


def authenticate_admin(metadata: Sequence[tuple[str, str | bytes]], key_sha256: str | None) -> None:
    """Let the call through only with the admin key whose SHA-256 is ``key_sha256``."""
    if not key_sha256:
        raise PermissionDenied(
            "admin calls are turned off on this server: set TTC_ADMIN_KEY_SHA256 to the "
            "SHA-256 of an admin key (`ttc-router config hash-key KEY` prints it)"
        )
    key = ""
    for name, value in metadata:
        if name == ADMIN_KEY_HEADER:
            key = (value.decode() if isinstance(value, bytes) else value).strip()
    if not key:
        raise Unauthenticated(f"no admin key: send it in the '{ADMIN_KEY_HEADER}' metadata entry")
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    if not hmac.compare_digest(digest, key_sha256.strip().lower()):
        raise Unauthenticated(f"the '{ADMIN_KEY_HEADER}' key is not the admin key")


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(cls.DESCRIPTOR.full_name, str(exc) or "cannot decode")

    return parse


def generic_handler(servicer: RouterServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """Registers the service with deserializers that turn bad bytes into INVALID_ARGUMENT."""
    handlers = {
        "Route": grpc.unary_unary_rpc_method_handler(
            servicer.Route,
            request_deserializer=_deserializer(pb.RouteRequest),
            response_serializer=pb.RouteResponse.SerializeToString,
        ),
        "Generate": grpc.unary_stream_rpc_method_handler(
            servicer.Generate,
            request_deserializer=_deserializer(pb.GenerateRequest),
            response_serializer=pb.GenerateResponse.SerializeToString,
        ),
        "RecordOutcome": grpc.unary_unary_rpc_method_handler(
            servicer.RecordOutcome,
            request_deserializer=_deserializer(pb.RecordOutcomeRequest),
            response_serializer=pb.RecordOutcomeResponse.SerializeToString,
        ),
        "GetBudget": grpc.unary_unary_rpc_method_handler(
            servicer.GetBudget,
            request_deserializer=_deserializer(pb.GetBudgetRequest),
            response_serializer=pb.GetBudgetResponse.SerializeToString,
        ),
        "ReloadModel": grpc.unary_unary_rpc_method_handler(
            servicer.ReloadModel,
            request_deserializer=_deserializer(pb.ReloadModelRequest),
            response_serializer=pb.ReloadModelResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

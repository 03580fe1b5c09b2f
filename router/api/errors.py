"""The one table from ttc-router errors to gRPC status codes, and the abort helper."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from router import errors as e

log = logging.getLogger("ttc_router.api")

# Most specific class first: the first isinstance match wins.
STATUS_TABLE: tuple[tuple[type[e.RouterError], grpc.StatusCode], ...] = (
    (e.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (e.BudgetExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.NoFeasibleArm, grpc.StatusCode.FAILED_PRECONDITION),
    (e.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (e.BackendTimeout, grpc.StatusCode.UNAVAILABLE),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ModelError, grpc.StatusCode.INTERNAL),
)


def status_for(err: e.RouterError) -> grpc.StatusCode:
    for cls, code in STATUS_TABLE:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def to_grpc_status(err: e.RouterError) -> grpc.Status:
    code = status_for(err)
    details: list[Any] = []
    if isinstance(err, e.BudgetExceeded) and err.violations:
        failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=v.subject, description=v.description
                )
                for v in err.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(failure)
        details.append(packed)
    status = status_pb2.Status(code=code.value[0], message=err.message, details=details)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """Abort the RPC with the mapped status. Unknown exceptions are logged, never sent."""
    if isinstance(exc, e.RouterError):
        st = to_grpc_status(exc)
        await context.abort(st.code, st.details, st.trailing_metadata)
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has details")

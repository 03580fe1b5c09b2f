"""One table maps every error class to a gRPC status; QuotaFailure rides along."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from router import errors as e
from router.api.errors import STATUS_TABLE, status_for, to_grpc_status


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_every_error_class_has_a_status() -> None:
    mapped = {cls for cls, _ in STATUS_TABLE}
    for cls in _all_subclasses(e.RouterError):
        assert any(issubclass(cls, m) for m in mapped), cls


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (e.InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (e.UnknownArm("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (e.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (e.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (e.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (e.Conflict("x"), grpc.StatusCode.ALREADY_EXISTS),
        (e.BudgetExceeded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (e.Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (e.NoFeasibleArm("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (e.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (e.BackendError("x"), grpc.StatusCode.UNAVAILABLE),
        (e.BackendTimeout("x"), grpc.StatusCode.UNAVAILABLE),
        (e.LedgerUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (e.ModelError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_for(err: e.RouterError, code: grpc.StatusCode) -> None:
    assert status_for(err) is code


def test_budget_exceeded_carries_quota_failure() -> None:
    err = e.BudgetExceeded("no money", [e.QuotaViolation("tenant:acme/daily", "remaining $0")])
    st = to_grpc_status(err)
    assert st.code is grpc.StatusCode.RESOURCE_EXHAUSTED and st.details == "no money"
    [(key, raw)] = st.trailing_metadata
    assert key == "grpc-status-details-bin"
    status = status_pb2.Status.FromString(raw)
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "tenant:acme/daily"

"""The one error hierarchy of ttc-router.

Every failure the service can report is one of these classes. Transports map them to
their own status codes in exactly one table (``router/api/errors.py`` for gRPC); third-party
exceptions (``redis.exceptions.*``, ``grpc.RpcError``, ``InferenceServerException``,
``httpx.HTTPError``, ``onnxruntime`` failures) are wrapped where they enter.

::

    RouterError                      base; ``message`` is safe to show a client
    ├── InvalidRequest               the request itself is malformed (fix the request)
    │   └── UnknownArm               an arm named in the request is not configured
    ├── Unauthenticated              no API key, or a key that matches no tenant
    ├── PermissionDenied             the tenant may not do this (arm not allowed, not its data)
    ├── NotFound                     a decision id or tenant that does not exist
    ├── Conflict                     a request id already used by another Generate
    ├── BudgetExceeded               the tenant's remaining budget cannot cover the reservation
    ├── Overloaded                   the server is at its concurrency limit; retry later
    ├── NoFeasibleArm                no allowed arm meets the request's hints
    ├── DeadlineExceeded             the caller's deadline ran out
    ├── Unavailable                  a dependency cannot serve now
    │   ├── BackendError             a model backend failed (connection, 5xx, bad stream)
    │   │   ├── BackendTimeout       a model backend did not answer in time
    │   │   └── BackendUnavailable   a tier is down: breaker open, or retries used up
    │   └── LedgerUnavailable        the budget ledger (Redis) cannot be reached
    ├── ConfigError                  a configuration file or setting is invalid
    └── ModelError                   an embedder/predictor model cannot be loaded or run
"""

from __future__ import annotations

from dataclasses import dataclass


class RouterError(Exception):
    """Base of every ttc-router error. ``message`` is written for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(RouterError):
    """The request is malformed; the message names the field and what to fix."""


class UnknownArm(InvalidRequest):
    """An arm named in the request is not one the service offers."""


class Unauthenticated(RouterError):
    """Missing or wrong API key."""


class PermissionDenied(RouterError):
    """The authenticated tenant may not do what it asked."""


class NotFound(RouterError):
    """The named object does not exist."""


class Conflict(RouterError):
    """The request collides with an earlier one (a reused request id)."""


@dataclass(frozen=True)
class QuotaViolation:
    """One violated limit, carried to clients as a ``google.rpc.QuotaFailure`` entry."""

    subject: str
    description: str


class BudgetExceeded(RouterError):
    """The tenant's remaining budget cannot cover the request's reservation."""

    def __init__(self, message: str, violations: list[QuotaViolation] | None = None) -> None:
        super().__init__(message)
        self.violations: list[QuotaViolation] = violations or []


class Overloaded(RouterError):
    """The server is at its concurrency limit."""


class NoFeasibleArm(RouterError):
    """No allowed arm satisfies the request's constraints."""


class DeadlineExceeded(RouterError):
    """The caller's deadline ran out before the work finished."""


class Unavailable(RouterError):
    """A dependency cannot serve right now; retrying later may work."""


class BackendError(Unavailable):
    """A model backend failed.

    ``retriable`` marks failures worth another attempt on the same tier (connection refused
    or reset, HTTP 429/5xx, Triton UNAVAILABLE) as opposed to ones that would fail again
    (a 4xx, a malformed response). ``partial_output_tokens`` counts tokens the backend had
    already produced when it failed, so they can be charged.
    """

    def __init__(
        self, message: str, *, retriable: bool = False, partial_output_tokens: int = 0
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.partial_output_tokens = partial_output_tokens


class BackendTimeout(BackendError):
    """A model backend did not answer within the time left."""


class BackendUnavailable(BackendError):
    """A tier cannot take requests now: its circuit breaker is open, or every retry of a
    retriable failure failed. The service may fall back to the tier's configured fallback."""


class LedgerUnavailable(Unavailable):
    """The budget ledger cannot be reached."""


class ConfigError(RouterError):
    """A configuration file or setting is invalid."""


class ModelError(RouterError):
    """A model file cannot be loaded or run."""


__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "DeadlineExceeded",
    "InvalidRequest",
    "LedgerUnavailable",
    "ModelError",
    "NoFeasibleArm",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "QuotaViolation",
    "RouterError",
    "Unauthenticated",
    "Unavailable",
    "UnknownArm",
]

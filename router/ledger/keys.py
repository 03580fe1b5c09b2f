"""Every Redis key name the ledger uses, built here and nowhere else.

All keys of one tenant carry the hash tag ``{t:<tenant>}`` so that they live in one Redis
Cluster slot and one Lua script may touch them together::

    <prefix>:{t:<tenant>}:spent:<window>:<start>   spent micro-dollars (counter)
    <prefix>:{t:<tenant>}:holds                    live holds: request id -> expiry ms (zset)
    <prefix>:{t:<tenant>}:holds:amount             live holds: request id -> micro-dollars (hash)
    <prefix>:{t:<tenant>}:holds:total              sum of the hash above (counter)
    <prefix>:{t:<tenant>}:req:<request id>         one request's reservation record (hash)
    <prefix>:{t:<tenant>}:audit                    settled charges (stream)
    <prefix>:{t:<tenant>}:refusals                 refused reservations and why (stream)
    <prefix>:{t:<tenant>}:pace                     pacing shadow price λ and its last update (hash)

``<start>`` is the window's label (``windows.WindowSpan.label``): its local start, plus the
UTC offset and zone when the tenant's zone is not UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.errors import InvalidRequest
from router.ledger.windows import WindowSpan

_MAX_ID_LEN = 256


def _check_part(kind: str, value: str) -> str:
    if not value:
        raise InvalidRequest(f"{kind} must not be empty")
    if len(value) > _MAX_ID_LEN:
        raise InvalidRequest(f"{kind} is {len(value)} characters long; the limit is {_MAX_ID_LEN}")
    return value


@dataclass(frozen=True)
class TenantKeys:
    """The key names of one tenant under one prefix."""

    prefix: str
    tenant: str

    def __post_init__(self) -> None:
        _check_part("tenant", self.tenant)
        if "{" in self.tenant or "}" in self.tenant:
            raise InvalidRequest(f"tenant {self.tenant!r} must not contain '{{' or '}}'")

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{t:{self.tenant}}}"

    def spent(self, span: WindowSpan) -> str:
        return f"{self.base}:spent:{span.window}:{span.label}"

    @property
    def holds(self) -> str:
        return f"{self.base}:holds"

    @property
    def hold_amounts(self) -> str:
        return f"{self.base}:holds:amount"

    @property
    def held_total(self) -> str:
        return f"{self.base}:holds:total"

    def request(self, request_id: str) -> str:
        return f"{self.base}:req:{_check_part('request_id', request_id)}"

    @property
    def audit(self) -> str:
        return f"{self.base}:audit"

    @property
    def refusals(self) -> str:
        return f"{self.base}:refusals"

    @property
    def pace(self) -> str:
        return f"{self.base}:pace"

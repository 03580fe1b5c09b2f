"""What one replica does while Redis cannot be reached, and how it catches up afterwards.

Reservations on a ``fail_open`` tier are admitted against a local allowance per tenant
(``admit``); every charge that could not be written (a settle of a local or a Redis hold) is
kept in ``pending`` in arrival order, and written to Redis by the ledger once it answers again
(settle is idempotent on the request id, so writing one twice charges once). The allowance a
tenant used comes back as its charges are written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.core.protocols import LedgerState


@dataclass(frozen=True)
class PendingCharge:
    """A settle Redis has not seen yet, with the moment it happened."""

    tenant: str
    request_id: str
    actual_micros: int
    audit: Mapping[str, str]
    tz: str
    at_s: float
    local: bool


@dataclass
class OutageBook:
    """Local holds, unwritten charges and the last state seen per tenant, for one replica."""

    local_holds: dict[tuple[str, str], int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)
    pending: list[PendingCharge] = field(default_factory=list)
    last_state: dict[str, LedgerState] = field(default_factory=dict)

    def admit(self, tenant: str, request_id: str, amount: int, allowance: int) -> bool:
        """Hold ``amount`` locally if the tenant's local use stays within ``allowance``."""
        if (tenant, request_id) in self.local_holds:
            return True
        used = self.used.get(tenant, 0)
        if used + amount > allowance:
            return False
        self.local_holds[(tenant, request_id)] = amount
        self.used[tenant] = used + amount
        return True

    def is_local(self, tenant: str, request_id: str) -> bool:
        return (tenant, request_id) in self.local_holds

    def release_local(self, tenant: str, request_id: str) -> None:
        amount = self.local_holds.pop((tenant, request_id), None)
        if amount is not None:
            self.used[tenant] = max(0, self.used.get(tenant, 0) - amount)

    def record(self, charge: PendingCharge) -> None:
        """Keep a charge for Redis; a local hold turns into its actual cost."""
        if charge.local:
            held = self.local_holds.pop((charge.tenant, charge.request_id), 0)
            used = self.used.get(charge.tenant, 0) - held + charge.actual_micros
            self.used[charge.tenant] = max(0, used)
        self.pending.append(charge)

    def written(self, charge: PendingCharge) -> None:
        """``charge`` is in Redis now: forget it and give back its allowance (once)."""
        if charge not in self.pending:
            return
        self.pending.remove(charge)
        if charge.local:
            used = self.used.get(charge.tenant, 0) - charge.actual_micros
            self.used[charge.tenant] = max(0, used)

    def local_held(self, tenant: str) -> int:
        return sum(v for (t, _), v in self.local_holds.items() if t == tenant)

"""Prometheus counters of the ledger: what happened whenever Redis could not be reached."""

from __future__ import annotations

from prometheus_client import Counter

LEDGER_UNAVAILABLE = Counter(
    "ttc_ledger_unavailable_total",
    "Ledger operations that found Redis unreachable, by operation, failure policy and outcome",
    ["operation", "policy", "outcome"],
)
"""Labels: ``operation`` reserve|settle|release|state; ``policy`` fail_closed|fail_open|none;
``outcome`` refused|admitted_locally|journaled|cached|failed."""

LEDGER_RECONCILED = Counter(
    "ttc_ledger_reconciled_total",
    "Charges made while Redis was unreachable and written to it once it answered again",
)

LEDGER_REFUSALS = Counter(
    "ttc_ledger_refusals_total", "Reservations the ledger refused for lack of budget"
)

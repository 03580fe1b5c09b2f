"""The ``BudgetExceeded`` a refused reservation raises, written for people to read."""

from __future__ import annotations

from collections.abc import Sequence

from router.core.types import WindowState
from router.errors import BudgetExceeded, QuotaViolation


def format_usd(micros: int) -> str:
    """Micro-dollars as dollars with at least two and at most six decimals: ``$0.000125``."""
    sign = "-" if micros < 0 else ""
    dollars, frac = divmod(abs(micros), 1_000_000)
    cents = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars:,}.{cents}"


def _iso(state: WindowState) -> str:
    return state.reset_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def violated(states: Sequence[WindowState], amount_micros: int) -> list[WindowState]:
    """The windows that cannot cover ``amount_micros`` on top of what is spent and held."""
    return [s for s in states if s.spent_micros + s.held_micros + amount_micros > s.cap_micros]


def budget_exceeded(
    tenant: str, amount_micros: int, states: Sequence[WindowState]
) -> BudgetExceeded:
    """One message naming every violated window, and one ``QuotaViolation`` per window."""
    asked = format_usd(amount_micros)
    violations: list[QuotaViolation] = []
    for s in violated(states, amount_micros):
        description = (
            f"{s.window} cap {format_usd(s.cap_micros)}: spent {format_usd(s.spent_micros)}, "
            f"held {format_usd(s.held_micros)}, remaining {format_usd(s.remaining_micros)}, "
            f"asked {asked}; resets at {_iso(s)}"
        )
        violations.append(QuotaViolation(f"tenant:{tenant}/{s.window}", description))
    detail = "; ".join(v.description for v in violations) or f"asked {asked}"
    left = min((s.remaining_micros for s in states), default=0)
    return BudgetExceeded(
        f"budget exceeded for tenant {tenant!r}: {format_usd(left)} left, less than the "
        f"reservation of {asked}; {detail}",
        violations,
    )

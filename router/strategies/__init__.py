"""Registered test-time-compute strategies."""

from router.strategies import beam, best, escalate, greedy, short, think, vote
from router.strategies.base import RunContext, Strategy, known_strategies, parse_strategy

__all__ = [
    "RunContext",
    "Strategy",
    "beam",
    "best",
    "escalate",
    "greedy",
    "known_strategies",
    "parse_strategy",
    "short",
    "think",
    "vote",
]

"""Registered test-time-compute strategies."""

from router.strategies import greedy, vote
from router.strategies.base import RunContext, Strategy, known_strategies, parse_strategy

__all__ = ["RunContext", "Strategy", "greedy", "known_strategies", "parse_strategy", "vote"]

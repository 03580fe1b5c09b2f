"""Registered test-time-compute strategies."""

from router.strategies import greedy, vote
from router.strategies.base import Strategy, parse_strategy

__all__ = ["Strategy", "greedy", "parse_strategy", "vote"]

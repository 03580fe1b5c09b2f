"""Splitting a batch of prompts into runs of similar length, to limit padding.

Every run pads its prompts to its longest one, so one long prompt in a batch of short
ones would make all of them cost as much as it does. ``plan_runs`` groups prompts (sorted
by length) so that the estimated cost, a fixed overhead per run plus a per-prompt cost that
grows with the padded length, is least.
"""

from __future__ import annotations

from collections.abc import Sequence

# Cost of one extra run of the graph, in units of one token of one prompt (measured on
# 2 cores: a lone 32-token prompt costs about 5 ms more than one inside a batch of 32).
RUN_OVERHEAD_TOKENS = 32.0
# Attention makes cost per token grow with length; this many tokens double it.
QUADRATIC_SCALE_TOKENS = 512.0
# Most prompts one run may hold (bounds memory and the planning work).
MAX_RUN = 64


def _prompt_cost(padded_length: int) -> float:
    return padded_length + padded_length * padded_length / QUADRATIC_SCALE_TOKENS


def plan_runs(lengths: Sequence[int], *, max_run: int = MAX_RUN) -> list[list[int]]:
    """Indices into ``lengths`` grouped into runs of at most ``max_run``, shortest first.

    Some optimal grouping is contiguous in length order, so dynamic programming over the
    sorted lengths finds the cheapest one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        per_prompt = _prompt_cost(lengths[order[end - 1]])
        for start in range(max(0, end - max_run), end):
            cost = best[start] + RUN_OVERHEAD_TOKENS + (end - start) * per_prompt
            if cost < best[end]:
                best[end] = cost
                cut[end] = start
    runs: list[list[int]] = []
    end = n
    while end > 0:
        start = cut[end]
        runs.append(order[start:end])
        end = start
    runs.reverse()
    return runs

"""Scorers that rank candidate answers for the scored strategies (``best@k``, ``beam@w``).

Two kinds exist, because a score comes either from the text or from what the backend
reported while sampling:

* a ``Scorer`` judges texts: ``score(prompt, responses)`` returns one number per response,
  higher is better. ``TritonScorer`` asks a reward model served by Triton.
* ``MeanLogprobScorer`` judges samples, not texts: it reads ``SampleResult.mean_logprob``,
  so a strategy using it must ask the backend for logprobs (``wants_logprobs``).

Strategies call ``score_samples``, which accepts either kind, and build scorers from the
arm's ``scorer`` option with ``build_scorer``: ``"logprob"``, or a mapping
``{"triton": "host:port", "model": "demo-reward", "timeout_s": 5}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from router.core.types import SampleResult
from router.errors import BackendError, InvalidRequest

LOGPROB = "logprob"
_TRITON_FIELDS = ("model", "timeout_s", "triton")


@runtime_checkable
class Scorer(Protocol):
    """Scores responses to one prompt from their text; higher is better.

    ``score`` returns one finite number per response, in order, and raises
    ``BackendError`` (``BackendTimeout`` past ``timeout_s``) when it cannot.
    """

    @property
    def name(self) -> str: ...

    async def score(
        self, prompt: str, responses: Sequence[str], *, timeout_s: float | None
    ) -> list[float]: ...

    async def aclose(self) -> None: ...


class MeanLogprobScorer:
    """Scores samples by the mean per-token log-probability their backend reported.

    A sample without one (the backend returned no logprobs) scores ``-inf``, below every
    sample that has one.
    """

    name = LOGPROB
    wants_logprobs = True

    def score_results(self, results: Sequence[SampleResult]) -> list[float]:
        return [
            r.mean_logprob
            if r.mean_logprob is not None and math.isfinite(r.mean_logprob)
            else -math.inf
            for r in results
        ]

    async def aclose(self) -> None:
        return None


AnyScorer = Scorer | MeanLogprobScorer
"""What a scored strategy holds: a text scorer or the logprob scorer."""


def wants_logprobs(scorer: AnyScorer) -> bool:
    """Whether samples must be requested with ``logprobs=True`` for ``scorer``."""
    return isinstance(scorer, MeanLogprobScorer)


async def score_samples(
    scorer: AnyScorer,
    prompt: str,
    results: Sequence[SampleResult],
    *,
    timeout_s: float | None,
) -> list[float]:
    """One score per sample, whichever kind ``scorer`` is."""
    if not results:
        return []
    if isinstance(scorer, MeanLogprobScorer):
        return scorer.score_results(results)
    scores = await scorer.score(prompt, [r.text for r in results], timeout_s=timeout_s)
    if len(scores) != len(results):
        raise BackendError(
            f"scorer {scorer.name!r} returned {len(scores)} scores for {len(results)} responses"
        )
    return [float(s) for s in scores]


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the lowest index."""
    if not scores:
        raise ValueError("no scores to choose from")
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


def build_scorer(spec: Mapping[str, Any] | str, *, option: str = "scorer") -> AnyScorer:
    """The scorer an arm's ``option`` describes; ``InvalidRequest`` naming what is wrong.

    ``"logprob"`` is the mean-logprob scorer. A mapping with ``triton`` (the server's gRPC
    ``host:port``), ``model`` (the reward model's name) and optionally ``timeout_s`` is a
    ``TritonScorer``; it connects on first use.
    """
    if isinstance(spec, str):
        if spec == LOGPROB:
            return MeanLogprobScorer()
        raise InvalidRequest(
            f"option {option!r}: unknown scorer {spec!r}; use {LOGPROB!r} or a mapping "
            "{triton: 'host:port', model: NAME}"
        )
    if not isinstance(spec, Mapping):
        raise InvalidRequest(
            f"option {option!r} must be {LOGPROB!r} or a mapping "
            f"{{triton: 'host:port', model: NAME}}, got {type(spec).__name__}"
        )
    for key in spec:
        if key not in _TRITON_FIELDS:
            raise InvalidRequest(
                f"option {option!r} has no field {key!r}; a Triton scorer takes: "
                + ", ".join(_TRITON_FIELDS)
            )
    endpoint, model = spec.get("triton"), spec.get("model")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise InvalidRequest(
            f"option {option!r}: field 'triton' must be the server's gRPC address 'host:port'"
        )
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(f"option {option!r}: field 'model' must name the reward model")
    timeout = spec.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidRequest(f"option {option!r}: field 'timeout_s' must be a positive number")
    from router.backends.triton_scorer import TritonScorer

    return TritonScorer(
        endpoint.strip(),
        model.strip(),
        timeout_s=float(timeout) if timeout is not None else None,
    )


__all__ = [
    "LOGPROB",
    "AnyScorer",
    "MeanLogprobScorer",
    "Scorer",
    "best_index",
    "build_scorer",
    "score_samples",
    "wants_logprobs",
]

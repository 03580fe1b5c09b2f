"""Off-policy evaluation of routing policies on logged traffic (pure NumPy).

Logged traffic holds one arm per request, chosen by the service's logging policy with a
known ``propensity``. A *policy* here is a predictor's table of every arm's predicted
``p_success`` and cost per prompt; for each λ of the spec's grid it picks
``argmax p - λ·cost`` over the arms the log offers (``classifier.metrics.choose``). This
module estimates, for each λ, the policy's mean score and mean cost as if it had served
the logged prompts:

* ``ips``: inverse propensity scoring, ``mean(1[π(x)=a]·r / propensity)``;
* ``snips``: self-normalised IPS, the same sum divided by the sum of the weights;
* ``dr``: doubly robust, ``mean(r̂(x, π(x)) + 1[π(x)=a]·(r - r̂(x, a)) / propensity)``
  with a *direct model* r̂ of every arm's score and cost per prompt. DR is unbiased
  when either the propensities or the direct model are right. The direct model is given
  by the caller: :meth:`DoublyRobust.from_policy` uses the evaluated policy's own
  predictions; ``classifier.retrain`` passes one model's out-of-sample predictions (the
  candidate's, fitted on other prompts) for both policies, so that prompts on which two
  policies agree add exactly nothing to their difference.

The same machinery evaluates full-information records exactly
(:class:`FullInformation`: the realised score of the chosen arm), which is the spec's
definition. From the estimated (cost, score) points it builds the quality–cost curve,
estimates the cheap and best arms from the constant policies "always arm a", and computes
APGR and cost@95 with ``classifier.metrics``. :func:`compare` adds a paired bootstrap
over prompts (the same resampled prompts for both policies) of the candidate − current
differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from classifier import metrics as M
from router.errors import InvalidRequest

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

ESTIMATORS = ("ips", "snips", "dr")
DEFAULT_BOOTSTRAP = 200
DEFAULT_LEVEL = 0.9
_CELLS_PER_BLOCK = 4_000_000


@dataclass(frozen=True)
class Terms:
    """Per-record contributions, each (G, N): the estimate of a setting is
    ``sum(score) / sum(weight)`` (and ``sum(cost) / sum(weight)``) over the records."""

    score: F64
    cost: F64
    weight: F64


class Estimator(Protocol):
    """Turns each record's chosen arm into its contribution to the estimates."""

    @property
    def size(self) -> int:
        """Number of records (prompts) evaluated."""
        ...

    @property
    def group(self) -> I64:
        """Bootstrap cluster of each record (records of one prompt resample together)."""
        ...

    def terms(self, chosen: I64) -> Terms:
        """Contributions for ``chosen`` arms of shape (G, N)."""
        ...


def _f64(x: ArrayLike, name: str, shape: tuple[int, ...] | None = None) -> F64:
    out = np.asarray(x, dtype=np.float64)
    if shape is not None and out.shape != shape:
        raise InvalidRequest(f"{name} has shape {out.shape}, expected {shape}")
    if not np.isfinite(out).all():
        raise InvalidRequest(f"{name} holds NaN or infinite values")
    return out


def _groups(group: ArrayLike | None, n: int) -> I64:
    if group is None:
        return np.arange(n, dtype=np.int64)
    g = np.asarray(group)
    if g.shape != (n,):
        raise InvalidRequest(f"group has shape {g.shape}, expected ({n},)")
    _, inverse = np.unique(g, return_inverse=True)
    return np.asarray(inverse, dtype=np.int64).reshape(n)


@dataclass(frozen=True)
class Logged:
    """Logged bandit feedback: per record the logged arm (a column index), its score,
    cost and the logging policy's propensity, and an optional prompt group."""

    arm: I64
    score: F64
    cost: F64
    propensity: F64
    group: I64
    n_arms: int

    @classmethod
    def build(
        cls,
        arm: ArrayLike,
        score: ArrayLike,
        cost: ArrayLike,
        propensity: ArrayLike,
        *,
        n_arms: int,
        group: ArrayLike | None = None,
    ) -> Logged:
        """Validated logged data; ``group`` (any labels) keeps repeats of one prompt
        together in the bootstrap."""
        a = np.asarray(arm, dtype=np.int64).reshape(-1)
        n = a.size
        if n == 0:
            raise InvalidRequest("no logged records to evaluate")
        if a.min() < 0 or a.max() >= n_arms:
            raise InvalidRequest(f"logged arm index out of range 0..{n_arms - 1}")
        prop = _f64(propensity, "propensity", (n,))
        if not ((prop > 0) & (prop <= 1)).all():
            raise InvalidRequest("every propensity must be in (0, 1]")
        return cls(
            a, _f64(score, "score", (n,)), _f64(cost, "cost", (n,)), prop, _groups(group, n), n_arms
        )

    @property
    def size(self) -> int:
        return int(self.arm.size)

    def match_weights(self, chosen: I64) -> F64:
        """``1[chosen == logged arm] / propensity`` per setting and record (G, N)."""
        w: F64 = (chosen == self.arm[None, :]) / self.propensity[None, :]
        return w


@dataclass(frozen=True)
class Ips:
    """Inverse propensity scoring; ``normalised`` divides by the sum of the weights
    (self-normalised IPS) instead of the number of records."""

    logged: Logged
    normalised: bool = False

    @property
    def size(self) -> int:
        return self.logged.size

    @property
    def group(self) -> I64:
        return self.logged.group

    def terms(self, chosen: I64) -> Terms:
        w = self.logged.match_weights(chosen)
        weight = w if self.normalised else np.ones_like(w)
        return Terms(w * self.logged.score, w * self.logged.cost, weight)


@dataclass(frozen=True)
class DoublyRobust:
    """Doubly robust estimates with a direct model of every arm's score and cost (N, A)."""

    logged: Logged
    score_hat: F64
    cost_hat: F64

    @classmethod
    def build(cls, logged: Logged, score_hat: ArrayLike, cost_hat: ArrayLike) -> DoublyRobust:
        shape = (logged.size, logged.n_arms)
        return cls(logged, _f64(score_hat, "score_hat", shape), _f64(cost_hat, "cost_hat", shape))

    @classmethod
    def from_policy(cls, logged: Logged, policy: Policy) -> DoublyRobust:
        """The evaluated policy's own predictions as the direct model."""
        return cls.build(logged, policy.p, policy.cost)

    @property
    def size(self) -> int:
        return self.logged.size

    @property
    def group(self) -> I64:
        return self.logged.group

    def terms(self, chosen: I64) -> Terms:
        lg = self.logged
        rows = np.arange(lg.size)
        w = lg.match_weights(chosen)
        s_chosen = np.take_along_axis(self.score_hat.T, chosen, axis=0)
        c_chosen = np.take_along_axis(self.cost_hat.T, chosen, axis=0)
        s_resid = lg.score - self.score_hat[rows, lg.arm]
        c_resid = lg.cost - self.cost_hat[rows, lg.arm]
        return Terms(s_chosen + w * s_resid, c_chosen + w * c_resid, np.ones_like(w))


@dataclass(frozen=True)
class FullInformation:
    """Exact evaluation on full-information records: the realised score and cost of the
    chosen arm, as ``spec/outcomes.md`` defines the metrics."""

    score: F64
    cost: F64
    group: I64

    @classmethod
    def build(
        cls, score: ArrayLike, cost: ArrayLike, *, group: ArrayLike | None = None
    ) -> FullInformation:
        s = _f64(score, "score")
        if s.ndim != 2 or s.shape[0] == 0:
            raise InvalidRequest(f"score must be a non-empty (N, A) table, got shape {s.shape}")
        return cls(s, _f64(cost, "cost", s.shape), _groups(group, s.shape[0]))

    @property
    def size(self) -> int:
        return int(self.score.shape[0])

    def terms(self, chosen: I64) -> Terms:
        s = np.take_along_axis(self.score.T, chosen, axis=0)
        c = np.take_along_axis(self.cost.T, chosen, axis=0)
        return Terms(s, c, np.ones_like(s))


def estimator(kind: str, logged: Logged, direct: tuple[F64, F64] | None = None) -> Estimator:
    """``ips``, ``snips`` or ``dr`` (which needs ``direct`` = (score_hat, cost_hat))."""
    if kind == "ips":
        return Ips(logged)
    if kind == "snips":
        return Ips(logged, normalised=True)
    if kind == "dr":
        if direct is None:
            raise InvalidRequest("the doubly robust estimate needs a direct model")
        return DoublyRobust.build(logged, direct[0], direct[1])
    raise InvalidRequest(f"unknown estimator {kind!r}: use one of {', '.join(ESTIMATORS)}")


@dataclass(frozen=True)
class Policy:
    """A predictor's view of every arm per prompt: ``p`` (N, A) and ``cost`` (N, A)."""

    p: F64
    cost: F64

    @classmethod
    def build(cls, p: ArrayLike, cost: ArrayLike) -> Policy:
        pa = _f64(p, "p")
        if pa.ndim != 2 or pa.shape[1] == 0:
            raise InvalidRequest(f"p must be an (N, A) table, got shape {pa.shape}")
        return cls(pa, _f64(cost, "cost", pa.shape))

    def lambdas(self) -> F64:
        """The spec's λ grid for these predictions (``classifier.metrics.lambda_grid``)."""
        return M.lambda_grid(self.p, self.cost)

    def choices(self, lambdas: ArrayLike | None = None) -> I64:
        """Chosen arm per λ and prompt (G, N); the own grid's choices are computed once."""
        if lambdas is None:
            return self._grid_choices
        return self._choose(np.asarray(lambdas, np.float64).ravel())

    @cached_property
    def _grid_choices(self) -> I64:
        return self._choose(self.lambdas())

    def _choose(self, lams: F64) -> I64:
        return np.stack([M.choose(self.p, self.cost, float(lam)) for lam in lams])


@dataclass(frozen=True)
class Estimate:
    """Estimated quality–cost curve of a policy, the estimated anchors and the metrics."""

    curve: M.Curve
    arm_scores: F64
    arm_costs: F64
    apgr: float
    cost_at_95: float | None

    @property
    def anchors(self) -> M.Anchors | None:
        return _anchors(self.arm_scores, self.arm_costs)

    def summary(self, arms: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready metrics: APGR, cost@95 (None when unreached), the anchors and the
        highest estimated score."""
        names = arms or [str(j) for j in range(self.arm_scores.size)]
        a = self.anchors
        return {
            "apgr": _clean(self.apgr),
            "cost_at_95": self.cost_at_95,
            "max_score": _clean(float(np.max(self.curve.scores)))
            if self.curve.scores.size
            else None,
            "cheap_arm": names[a.cheap] if a else None,
            "best_arm": names[a.best] if a else None,
            "arm_scores": {
                n: _clean(float(v)) for n, v in zip(names, self.arm_scores, strict=True)
            },
            "arm_costs": {n: _clean(float(v)) for n, v in zip(names, self.arm_costs, strict=True)},
        }


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else x


def _anchors(arm_scores: F64, arm_costs: F64) -> M.Anchors | None:
    if not (np.isfinite(arm_scores).all() and np.isfinite(arm_costs).all()):
        return None
    return M.anchors(arm_scores[None, :], arm_costs[None, :])


def _ratio(num: F64, den: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _metrics(
    costs: F64, scores: F64, arm_scores: F64, arm_costs: F64
) -> tuple[float, float | None, M.Curve]:
    """APGR and cost@95 of one estimated curve against the estimated anchors."""
    ok = np.isfinite(costs) & np.isfinite(scores)
    curve = M.Curve(costs[ok], scores[ok])
    a = _anchors(arm_scores, arm_costs)
    if a is None or not ok.any():
        return float("nan"), None, curve
    return M.apgr(curve, a), M.cost_at_quality(curve, a, 0.95), curve


def _constant_choices(n_arms: int, n: int) -> I64:
    return np.repeat(np.arange(n_arms, dtype=np.int64)[:, None], n, axis=1)


def estimate(
    est: Estimator,
    policy: Policy,
    lambdas: ArrayLike | None = None,
    *,
    anchor_est: Estimator | None = None,
) -> Estimate:
    """The policy's estimated curve over the λ grid (its own grid by default), the
    estimated anchors (constant policies "always arm a", by ``anchor_est`` when given)
    and APGR / cost@95 from them."""
    if policy.p.shape[0] != est.size:
        raise InvalidRequest(f"policy covers {policy.p.shape[0]} prompts, the data {est.size}")
    t = est.terms(policy.choices(lambdas))
    k = (anchor_est or est).terms(_constant_choices(policy.p.shape[1], est.size))
    wsum, ksum = t.weight.sum(axis=1), k.weight.sum(axis=1)
    costs, scores = _ratio(t.cost.sum(axis=1), wsum), _ratio(t.score.sum(axis=1), wsum)
    arm_s, arm_c = _ratio(k.score.sum(axis=1), ksum), _ratio(k.cost.sum(axis=1), ksum)
    apgr, c95, curve = _metrics(costs, scores, arm_s, arm_c)
    return Estimate(curve, arm_s, arm_c, apgr, c95)


def capped_cost95(value: float | None) -> float:
    """cost@95 for comparisons: "unreached" and anything above always-best count as 1.0,
    what reaching 95% of the best arm's score costs when the best arm itself is used."""
    return 1.0 if value is None or math.isnan(value) else min(value, 1.0)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile interval (NaN when undefined)."""

    point: float
    low: float
    high: float
    valid: int

    def to_json(self) -> dict[str, Any]:
        return {
            "point": _clean(self.point),
            "low": _clean(self.low),
            "high": _clean(self.high),
            "valid_replicates": self.valid,
        }


@dataclass(frozen=True)
class Comparison:
    """Candidate and current estimates with paired-bootstrap intervals of the gains:
    ``apgr_gain`` = candidate − current APGR (higher is better for the candidate),
    ``cost95_saving`` = current − candidate capped cost@95 (higher is better)."""

    candidate: Estimate
    current: Estimate
    apgr_gain: Interval
    cost95_saving: Interval
    n_boot: int
    level: float
    seed: int


def _resample_counts(group: I64, n_boot: int, seed: int) -> NDArray[np.float64]:
    """(B, K) how often each prompt group is drawn in each bootstrap replicate."""
    k = int(group.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.repeat(np.arange(n_boot), k), draws.ravel()), 1.0)
    return counts


def _resampled_sums(counts: F64, group: I64, terms: Terms) -> tuple[F64, F64, F64]:
    """Sums of score, cost and weight over each replicate's records: three (B, G)."""
    n_boot, n = counts.shape[0], group.size
    g = terms.score.shape[0]
    out = (np.zeros((n_boot, g)), np.zeros((n_boot, g)), np.zeros((n_boot, g)))
    block = max(1, _CELLS_PER_BLOCK // max(n, 1))
    for start in range(0, n_boot, block):
        w = counts[start : start + block][:, group]
        for o, t in zip(out, (terms.score, terms.cost, terms.weight), strict=True):
            o[start : start + block] = w @ t.T
    return out


def _interval(point: float, reps: F64, level: float) -> Interval:
    ok = reps[np.isfinite(reps)]
    if ok.size == 0 or math.isnan(point):
        return Interval(point, float("nan"), float("nan"), int(ok.size))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [tail, 1.0 - tail])
    return Interval(point, float(lo), float(hi), int(ok.size))


def compare(
    candidate: Policy,
    current: Policy,
    est: Estimator,
    *,
    current_est: Estimator | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Comparison:
    """Estimates of both policies and a paired bootstrap of their differences.

    Each replicate draws the prompt groups with replacement once and evaluates both
    policies (each on its own full-data λ grid) and the anchors on that same draw.
    ``current_est`` evaluates the current policy with another estimator of the same
    records (e.g. DR with its own predictions); by default both share ``est``. The
    anchors (cheap and best arm) always come from ``est``, shared by both policies.
    """
    other = current_est or est
    if other.size != est.size or not np.array_equal(other.group, est.group):
        raise InvalidRequest("both estimators must cover the same records")
    if not 0.0 < level < 1.0:
        raise InvalidRequest("level must be in (0, 1)")
    if candidate.p.shape != current.p.shape:
        raise InvalidRequest("both policies must predict the same prompts and arms")
    cand_pt = estimate(est, candidate)
    curr_pt = estimate(other, current, anchor_est=est)
    counts = _resample_counts(est.group, n_boot, seed)
    n_arms = candidate.p.shape[1]
    const = _constant_choices(n_arms, est.size)
    k_s, k_c, k_w = _resampled_sums(counts, est.group, est.terms(const))
    arm_s, arm_c = _ratio(k_s, k_w), _ratio(k_c, k_w)
    reps: dict[str, list[tuple[float, float]]] = {}
    for name, e, pol in (("cand", est, candidate), ("curr", other, current)):
        s, c, w = _resampled_sums(counts, est.group, e.terms(pol.choices()))
        scores, costs = _ratio(s, w), _ratio(c, w)
        out = []
        for b in range(n_boot):
            apgr, c95, _ = _metrics(costs[b], scores[b], arm_s[b], arm_c[b])
            out.append((apgr, capped_cost95(c95) if not math.isnan(apgr) else float("nan")))
        reps[name] = out
    cand = np.asarray(reps["cand"])
    curr = np.asarray(reps["curr"])
    apgr_gain = _interval(cand_pt.apgr - curr_pt.apgr, cand[:, 0] - curr[:, 0], level)
    saving_pt = (
        capped_cost95(curr_pt.cost_at_95) - capped_cost95(cand_pt.cost_at_95)
        if not (math.isnan(cand_pt.apgr) or math.isnan(curr_pt.apgr))
        else float("nan")
    )
    saving = _interval(saving_pt, curr[:, 1] - cand[:, 1], level)
    return Comparison(cand_pt, curr_pt, apgr_gain, saving, n_boot, level, seed)


__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_LEVEL",
    "ESTIMATORS",
    "Comparison",
    "DoublyRobust",
    "Estimate",
    "Estimator",
    "FullInformation",
    "Interval",
    "Ips",
    "Logged",
    "Policy",
    "Terms",
    "capped_cost95",
    "compare",
    "estimate",
    "estimator",
]

"""Drift alarms: is the predictor still right about what each arm delivers and costs?

Per arm, two sliding windows hold the last ``window`` observations:

* success: the p_success predicted for a decision against the score ``RecordOutcome``
  brought for it; the gap is ``|mean predicted − mean realised|`` in score points;
* cost: the cost predicted for a finished request against what was settled for it; the
  ratio is ``mean actual / mean predicted`` and the gap is relative, ``|ratio − 1|``.

When a full window's gap goes above ``threshold`` one warning is logged (logger
``ttc_router.drift``); it is logged again only after the gap has come back to or below the
threshold (an info line says so, with how long the alarm lasted) and crossed it once more.
A window that is not yet full never alarms. No I/O beyond logging; ``snapshot`` only reads
counters, so an exporter may call it from another thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from router.errors import ConfigError

log = logging.getLogger("ttc_router.drift")

Signal = Literal["success", "cost"]


@dataclass(frozen=True)
class WindowStats:
    """One window as it stands: how many observations it holds, their means, the gap, and
    whether its alarm is raised (``alarm_since`` is the clock reading when it was)."""

    observations: int
    full: bool
    predicted_mean: float
    realised_mean: float
    gap: float
    alarm: bool
    alarm_since: float | None

    @property
    def ratio(self) -> float:
        """``realised_mean / predicted_mean`` (1 when both are 0, infinite when only the
        prediction is 0)."""
        return _ratio(self.predicted_mean, self.realised_mean)


@dataclass(frozen=True)
class ArmDrift:
    """An arm's two windows; None for a window with no observation yet."""

    arm: str
    success: WindowStats | None
    cost: WindowStats | None


def _ratio(predicted: float, realised: float) -> float:
    if predicted > 0:
        return realised / predicted
    return 1.0 if realised == 0 else math.inf


def _gap(signal: Signal, predicted: float, realised: float) -> float:
    if signal == "success":
        return abs(predicted - realised)
    return abs(_ratio(predicted, realised) - 1.0)


@dataclass
class _Window:
    signal: Signal
    size: int
    pairs: deque[tuple[float, float]]
    sum_predicted: float = 0.0
    sum_realised: float = 0.0
    since_exact: int = 0
    alarm_since: float | None = None

    def add(self, predicted: float, realised: float) -> None:
        sum_p, sum_r = self.sum_predicted + predicted, self.sum_realised + realised
        if len(self.pairs) == self.size:
            old_p, old_r = self.pairs.popleft()
            sum_p, sum_r = sum_p - old_p, sum_r - old_r
        self.pairs.append((predicted, realised))
        self.sum_predicted, self.sum_realised = sum_p, sum_r
        self.since_exact += 1
        if self.since_exact >= self.size:
            # Running sums gather rounding error; recompute them exactly now and then.
            self.sum_predicted = math.fsum(p for p, _ in self.pairs)
            self.sum_realised = math.fsum(r for _, r in self.pairs)
            self.since_exact = 0

    def stats(self) -> WindowStats | None:
        n = len(self.pairs)
        if n == 0:
            return None
        predicted, realised = self.sum_predicted / n, self.sum_realised / n
        return WindowStats(
            observations=n,
            full=n >= self.size,
            predicted_mean=predicted,
            realised_mean=realised,
            gap=_gap(self.signal, predicted, realised),
            alarm=self.alarm_since is not None,
            alarm_since=self.alarm_since,
        )


@dataclass
class DriftTracker:
    """Sliding windows of predictions against outcomes, per arm, with warning-once alarms.

    ``window`` is the number of observations per arm and signal; ``threshold`` applies to
    the success gap (score points) and to the relative cost gap alike.
    """

    window: int = 500
    threshold: float = 0.1
    clock: Callable[[], float] = time.time
    _arms: dict[tuple[str, Signal], _Window] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.window <= 0 or not self.threshold > 0:
            raise ConfigError(
                "drift alarms need a window of at least one observation and a threshold "
                "above 0; set TTC_DRIFT_WINDOW and TTC_DRIFT_THRESHOLD"
            )

    def observe_success(self, arm: str, predicted: float, score: float) -> None:
        """A score arrived for a decision on ``arm`` whose predicted p_success was
        ``predicted``."""
        self._observe(arm, "success", predicted, score)

    def observe_cost(self, arm: str, predicted_usd: float, actual_usd: float) -> None:
        """A request on ``arm`` settled at ``actual_usd``; ``predicted_usd`` was expected."""
        self._observe(arm, "cost", predicted_usd, actual_usd)

    def _observe(self, arm: str, signal: Signal, predicted: float, realised: float) -> None:
        if not (math.isfinite(predicted) and math.isfinite(realised)):
            return
        win = self._arms.get((arm, signal))
        if win is None:
            win = self._arms[(arm, signal)] = _Window(signal, self.window, deque())
        win.add(predicted, realised)
        stats = win.stats()
        if stats is None or not stats.full:
            return
        above = stats.gap > self.threshold
        extra = {
            "arm": arm,
            "signal": signal,
            "predicted_mean": stats.predicted_mean,
            "realised_mean": stats.realised_mean,
            "gap": stats.gap,
            "threshold": self.threshold,
            "window": stats.observations,
        }
        if above and win.alarm_since is None:
            win.alarm_since = self.clock()
            log.warning(
                "prediction drift on arm %s: %s gap %.3f over the last %d outcomes is above %.3f",
                arm,
                signal,
                stats.gap,
                stats.observations,
                self.threshold,
                extra=extra,
            )
        elif not above and win.alarm_since is not None:
            lasted = self.clock() - win.alarm_since
            win.alarm_since = None
            log.info(
                "prediction drift on arm %s: %s gap back to %.3f after %.0f s",
                arm,
                signal,
                stats.gap,
                lasted,
                extra={**extra, "alarm_s": lasted},
            )

    def arm(self, arm: str) -> ArmDrift:
        """The windows of one arm (both None for an arm never observed)."""
        return ArmDrift(arm, self._stats(arm, "success"), self._stats(arm, "cost"))

    def _stats(self, arm: str, signal: Signal) -> WindowStats | None:
        win = self._arms.get((arm, signal))
        return win.stats() if win is not None else None

    def reset(self) -> None:
        """Forget every window (a new model is serving: its drift starts from scratch)."""
        self._arms.clear()

    def snapshot(self) -> list[ArmDrift]:
        """Every observed arm's windows, by arm name."""
        arms = sorted({a for a, _ in list(self._arms)})
        return [self.arm(a) for a in arms]

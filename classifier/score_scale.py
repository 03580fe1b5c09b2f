"""Scores on a scale other than [0, 1]: a judge's 1–10, a 0–100 grade, a reward in [−1, 1].

The predictor learns expected scores as probabilities (fractional targets in [0, 1]), so a
table whose scores leave [0, 1] is mapped onto it before training, ``s → (s − lo) / (hi −
lo)`` with ``lo = min(0, lowest score)`` and ``hi = max(1, highest score)``, and the model
records that scale (``score_scale`` in ``metadata.json``). For non-negative scores ``lo``
is 0 and the map is a pure rescaling, which leaves APGR, cost@95 and CPT unchanged: the
routing metrics are ratios of scores. ``ttc-router predict`` maps ``p_success`` back onto
the table's scale; ``eval`` maps test scores onto the model's, clipping scores past it.
Tables within [0, 1] are left exactly as they are.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from classifier.outcomes_io import OutcomeRecord
from router.errors import InvalidRequest

METADATA_KEY = "score_scale"


@dataclass(frozen=True)
class ScoreScale:
    """The scores' range [lo, hi], mapped linearly onto [0, 1]."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
            raise InvalidRequest(f"a score scale needs lo < hi, got [{self.lo}, {self.hi}]")

    def to_unit(self, score: float) -> float:
        return min(max((score - self.lo) / (self.hi - self.lo), 0.0), 1.0)

    def from_unit(self, p: float) -> float:
        return self.lo + p * (self.hi - self.lo)

    def to_json(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}


def scale_of(records: Iterable[OutcomeRecord]) -> ScoreScale | None:
    """The scale of these records' scores, or None when they all lie in [0, 1]."""
    lo, hi = 0.0, 1.0
    for r in records:
        lo, hi = min(lo, r.score), max(hi, r.score)
    return None if (lo, hi) == (0.0, 1.0) else ScoreScale(lo, hi)


def to_unit_records(
    records: Sequence[OutcomeRecord], scale: ScoreScale | None
) -> list[OutcomeRecord]:
    """The records with scores mapped onto [0, 1] (unchanged without a scale)."""
    if scale is None:
        return list(records)
    return [dataclasses.replace(r, score=scale.to_unit(r.score)) for r in records]


def on_unit_scale(
    records: Sequence[OutcomeRecord], arms: Iterable[str] | None = None
) -> tuple[list[OutcomeRecord], ScoreScale | None]:
    """The records mapped onto [0, 1] by the scale of the scores of ``arms`` (all arms by
    default), and that scale."""
    wanted = None if arms is None else set(arms)
    scale = scale_of(r for r in records if wanted is None or r.arm in wanted)
    return to_unit_records(records, scale), scale


def scale_from_metadata(meta: Mapping[str, Any]) -> ScoreScale | None:
    """The scale a model was trained on (None: scores in [0, 1])."""
    got = meta.get(METADATA_KEY)
    if got is None:
        return None
    return ScoreScale(float(got["lo"]), float(got["hi"]))


def require_unit_scores(records: Iterable[OutcomeRecord], where: str) -> None:
    """Refuse scores outside [0, 1] where no scale can be recorded (logged traffic)."""
    scale = scale_of(records)
    if scale is not None:
        raise InvalidRequest(
            f"{where}: scores run from {scale.lo:g} to {scale.hi:g}, outside [0, 1]; "
            "this path needs scores in [0, 1] (ttc-router train maps other scales itself)"
        )


__all__ = [
    "METADATA_KEY",
    "ScoreScale",
    "on_unit_scale",
    "require_unit_scores",
    "scale_from_metadata",
    "scale_of",
    "to_unit_records",
]

"""Scores on scales other than [0, 1] (``classifier.score_scale``)."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.outcomes_io import OutcomeRecord
from classifier.retrain import logged_records
from classifier.score_scale import (
    ScoreScale,
    require_unit_scores,
    scale_from_metadata,
    scale_of,
    to_unit_records,
)
from classifier.train import train
from router.errors import InvalidRequest


def _recs(*scores: float) -> list[OutcomeRecord]:
    return [
        OutcomeRecord(f"p{i}", f"prompt {i}", "a/greedy", s, 0.001) for i, s in enumerate(scores)
    ]


@pytest.mark.parametrize(
    ("scores", "want"),
    [
        ((0.0, 1.0, 0.5), None),
        ((0.2, 0.7), None),  # inside [0, 1]: the spec's scale, whatever the table's extremes
        ((1.0, 7.0, 10.0), (0.0, 10.0)),  # a 1–10 judge: lo stays 0, a pure rescaling
        ((0.0, 42.0, 100.0), (0.0, 100.0)),
        ((-1.0, 0.0, 1.0), (-1.0, 1.0)),
        ((-0.5, 0.25), (-0.5, 1.0)),
    ],
)
def test_the_scale_of_a_table(scores: tuple[float, ...], want: tuple[float, float] | None) -> None:
    got = scale_of(_recs(*scores))
    assert (None if got is None else (got.lo, got.hi)) == want


def test_mapping_onto_unit_and_back() -> None:
    scale = ScoreScale(0.0, 10.0)
    recs = to_unit_records(_recs(1.0, 7.0, 10.0, 12.0), scale)
    assert [r.score for r in recs] == [0.1, 0.7, 1.0, 1.0]  # past the scale: clipped
    assert scale.from_unit(0.7) == pytest.approx(7.0)
    signed = ScoreScale(-1.0, 1.0)
    assert signed.to_unit(0.0) == 0.5 and signed.from_unit(0.25) == -0.5
    assert scale_from_metadata({"score_scale": signed.to_json()}) == signed
    assert scale_from_metadata({}) is None
    assert to_unit_records(recs, None) == recs
    with pytest.raises(InvalidRequest, match="lo < hi"):
        ScoreScale(1.0, 1.0)


def test_paths_without_a_recorded_scale_refuse_other_scores() -> None:
    require_unit_scores(_recs(0.0, 1.0), "t")
    with pytest.raises(InvalidRequest, match=r"t: scores run from 0 to 7"):
        require_unit_scores(_recs(0.0, 7.0), "t")
    with pytest.raises(InvalidRequest, match=r"scores must be in \[0, 1\] here, got 7\.0"):
        train(_recs(0.0, 7.0), seed=0, featurize=lambda t: np.zeros((len(t), 3), np.float32))
    rows = [
        {**r.to_json(), "propensity": 0.5, "decision_id": f"d{i}"}
        for i, r in enumerate(_recs(0.5, 3.0))
    ]
    kept, skipped = logged_records(rows, None)
    assert [r.score for r in kept] == [0.5]
    assert skipped.invalid == 1 and "outside [0, 1]" in (skipped.first_invalid or "")

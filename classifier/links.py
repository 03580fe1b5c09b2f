"""The logistic link between probabilities and the logits the learners and the stack use."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

LOGIT_CLIP = 1e-4


def logit(p: F64) -> F64:
    """log(p / (1 − p)), with p clipped to [LOGIT_CLIP, 1 − LOGIT_CLIP]."""
    q = np.clip(p, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    out: F64 = np.log(q) - np.log1p(-q)
    return out


def sigmoid(z: F64) -> F64:
    """1 / (1 + e^−z), written with tanh so that large |z| cannot overflow."""
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


__all__ = ["LOGIT_CLIP", "logit", "sigmoid"]

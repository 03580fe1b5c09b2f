"""A small multi-output network: standardised features → one success logit per arm.

One hidden ReLU layer shared by all arms, trained with PyTorch on the observed
(prompt, arm) cells only (masked, graded targets, record weights) with Adam and weight
decay. The number of epochs is chosen by cross-validation: every fold's network is
scored on its held-out prompts at each checkpoint, the checkpoint with the lowest
pooled loss wins, and its held-out logits are the out-of-fold predictions the stack
learns from. Deterministic for a seed (fixed initialisation and mini-batch order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

HIDDEN = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-3
MAX_EPOCHS = 40
CHECK_EVERY = 2
BATCH = 200


@dataclass
class MlpHead:
    """Weights of the fitted network (float32): logits = relu(z W1 + b1) W2 + b2."""

    w1: NDArray[np.float32]
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]
    b2: NDArray[np.float32]
    epochs: int

    def logits(self, z: NDArray[Any]) -> F64:
        h = np.maximum(np.asarray(z, np.float32) @ self.w1 + self.b1, 0.0)
        out: F64 = (h @ self.w2 + self.b2).astype(np.float64)
        return out


def _train(
    z: NDArray[np.float32],
    target: NDArray[np.float32],
    weight: NDArray[np.float32],
    seed: int,
    checkpoints: Sequence[int],
    z_val: NDArray[np.float32] | None = None,
) -> tuple[list[MlpHead], list[NDArray[np.float32]]]:
    """Train; return the network and the validation logits at each checkpoint."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_in, n_out = z.shape[1], target.shape[1]
    w1 = torch.empty(n_in, HIDDEN)
    w2 = torch.empty(HIDDEN, n_out)
    torch.nn.init.kaiming_uniform_(w1.T, a=5**0.5, generator=gen)
    torch.nn.init.kaiming_uniform_(w2.T, a=5**0.5, generator=gen)
    params = [
        torch.nn.Parameter(w1),
        torch.nn.Parameter(torch.zeros(HIDDEN)),
        torch.nn.Parameter(w2),
        torch.nn.Parameter(torch.zeros(n_out)),
    ]
    prior = (target * weight).sum(0) / np.maximum(weight.sum(0), 1e-9)
    prior = np.clip(prior, 1e-3, 1 - 1e-3)
    with torch.no_grad():
        params[3].copy_(torch.from_numpy(np.log(prior / (1 - prior)).astype(np.float32)))
    opt = torch.optim.Adam(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    x = torch.from_numpy(np.ascontiguousarray(z, np.float32))
    y = torch.from_numpy(np.ascontiguousarray(target, np.float32))
    w = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
    xv = None if z_val is None else torch.from_numpy(np.ascontiguousarray(z_val, np.float32))
    heads: list[MlpHead] = []
    vals: list[NDArray[np.float32]] = []
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")

    def snapshot(epoch: int) -> None:
        with torch.no_grad():
            w1, b1, w2, b2 = (p.detach().numpy().astype(np.float32).copy() for p in params)
            heads.append(MlpHead(w1, b1, w2, b2, epoch))
            if xv is not None:
                h = torch.relu(xv @ params[0] + params[1])
                vals.append((h @ params[2] + params[3]).numpy().copy())

    wanted = set(checkpoints)
    n = x.shape[0]
    with torch.enable_grad():
        for epoch in range(1, max(checkpoints) + 1):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, BATCH):
                idx = order[start : start + BATCH]
                opt.zero_grad()
                h = torch.relu(x[idx] @ params[0] + params[1])
                part = loss_fn(h @ params[2] + params[3], y[idx]) * w[idx]
                loss = part.sum() / w[idx].sum().clamp(min=1e-9)
                loss.backward()
                opt.step()
            if epoch in wanted:
                snapshot(epoch)
    return heads, vals


def _loss(
    logits: NDArray[np.float32], target: NDArray[np.float32], w: NDArray[np.float32]
) -> float:
    lg = logits.astype(np.float64)
    ll = np.logaddexp(0.0, lg) - target * lg
    return float((ll * w).sum() / max(float(w.sum()), 1e-12))


def fit_mlp(
    z: NDArray[Any],
    target: NDArray[Any],
    weight: NDArray[Any],
    folds: NDArray[np.int64],
    seed: int,
) -> tuple[MlpHead, F64]:
    """Fit on rows ``z`` (N, F) with targets/weights (N, A) (weight 0 = unobserved).

    Returns the network trained on all rows for the CV-chosen number of epochs and the
    out-of-fold logits (N, A) at that number."""
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    zf = np.asarray(z, np.float32)
    tf = np.asarray(target, np.float32)
    wf = np.asarray(weight, np.float32)
    checks = list(range(CHECK_EVERY, MAX_EPOCHS + 1, CHECK_EVERY))
    oof = np.zeros((len(checks), *tf.shape), np.float32)
    for f in np.unique(folds).tolist():
        tr, te = folds != f, folds == f
        if not tr.any() or not te.any():
            continue
        _, vals = _train(zf[tr], tf[tr], wf[tr], seed + 17 * (f + 1), checks, zf[te])
        for c, v in enumerate(vals):
            oof[c][te] = v
    losses = [_loss(oof[c], tf, wf) for c in range(len(checks))]
    best = int(np.argmin(losses))
    heads, _ = _train(zf, tf, wf, seed, [checks[best]])
    return heads[0], oof[best].astype(np.float64)


__all__ = ["MlpHead", "fit_mlp"]

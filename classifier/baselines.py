"""Re-implementations of published routing methods, on the same embeddings and splits.

Each baseline is fitted on the training prompts' embeddings (the ``emb_*`` columns, or
all columns when there are none) and their observed scores, and returns a predicted
score per (test prompt, arm); the evaluation then routes every baseline with the same
cost estimates as the router, so the comparison is about who knows which prompt needs
which arm.

* ``knn20``: mean score of the 20 nearest training prompts by cosine (spec baseline).
* ``logreg``: one logistic regression per arm, C = 1, on standardised embeddings.
* ``mf``: RouteLLM's matrix-factorisation router generalised to A arms:
  ``sigmoid(v_armᵀ (W e) + b_arm)``, trained on all observed (prompt, arm) cells.
* ``mlp``: RouteLLM's BERT-classifier router with the encoder frozen: an MLP classifier
  (one hidden layer) on the embedding, one sigmoid output per arm (score >= 0.5).
* ``task_complexity``: the NVIDIA LLM router's idea: each prompt is given a task class
  (k-means on embeddings, 8 clusters) and a complexity class (terciles of a ridge
  regression of the share of arms that fail it), and each (task, complexity) class is
  routed by its arms' mean training score (shrunk towards the arm's mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from classifier.cells import CELL_PRIOR, N_LEVELS, N_TASKS

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

KNN_K = 20
MF_DIM = 64
MF_EPOCHS = 300
MLP_HIDDEN = 128

NAMES = ("knn20", "logreg", "mf", "mlp", "task_complexity")


def embedding_columns(names: Sequence[str]) -> list[int]:
    emb = [i for i, n in enumerate(names) if n.startswith("emb_")]
    return emb or list(range(len(names)))


def _unit(x: F32) -> F32:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), np.float32)


def knn(train_e: F32, s: F64, have: NDArray[np.bool_], test_e: F32, k: int = KNN_K) -> F64:
    a, b = _unit(train_e), _unit(test_e)
    k = min(k, a.shape[0])
    sim = b @ a.T
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    num = (s * have)[idx].sum(axis=1)
    den = have[idx].sum(axis=1)
    mean = (s * have).sum(axis=0) / np.maximum(have.sum(axis=0), 1)
    out: F64 = np.where(den > 0, num / np.maximum(den, 1), mean)
    return out


def logreg(train_e: F32, s: F64, have: NDArray[np.bool_], test_e: F32) -> F64:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_e)
    za, zb = scaler.transform(train_e), scaler.transform(test_e)
    cols = []
    for j in range(s.shape[1]):
        rows = np.flatnonzero(have[:, j])
        y = np.concatenate([np.ones(rows.size), np.zeros(rows.size)])
        w = np.concatenate([s[rows, j], 1.0 - s[rows, j]])
        keep = w > 0
        xr = np.concatenate([za[rows], za[rows]])[keep]
        if len(np.unique(y[keep])) < 2:
            cols.append(np.full(zb.shape[0], float(y[keep][0])))
            continue
        clf = LogisticRegression(C=1.0, max_iter=3000).fit(xr, y[keep], sample_weight=w[keep])
        cols.append(clf.predict_proba(zb)[:, 1])
    return np.column_stack(cols)


def matrix_factorisation(
    train_e: F32, s: F64, have: NDArray[np.bool_], test_e: F32, seed: int
) -> F64:
    import torch

    torch.manual_seed(seed)
    n_arms = s.shape[1]
    e = torch.from_numpy(np.asarray(train_e, np.float32))
    target = torch.from_numpy(s.astype(np.float32))
    mask = torch.from_numpy(have.astype(np.float32))
    proj = torch.nn.Linear(e.shape[1], MF_DIM, bias=False)
    arms = torch.nn.Parameter(0.1 * torch.randn(n_arms, MF_DIM))
    bias = torch.nn.Parameter(torch.zeros(n_arms))
    opt = torch.optim.Adam([*proj.parameters(), arms, bias], lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    with torch.enable_grad():
        for _ in range(MF_EPOCHS):
            opt.zero_grad()
            logits = proj(e) @ arms.T + bias
            loss = (loss_fn(logits, target) * mask).sum() / mask.sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        out = torch.sigmoid(proj(torch.from_numpy(np.asarray(test_e, np.float32))) @ arms.T + bias)
    result: F64 = out.numpy().astype(np.float64)
    return result


def mlp(train_e: F32, s: F64, have: NDArray[np.bool_], test_e: F32, seed: int) -> F64:
    from sklearn.neural_network import MLPClassifier

    full = have.all(axis=1)
    y = (s[full] >= 0.5).astype(np.int64)
    constant = [j for j in range(y.shape[1]) if len(np.unique(y[:, j])) < 2]
    if constant or full.sum() < 10:
        mean = (s * have).sum(axis=0) / np.maximum(have.sum(axis=0), 1)
        return np.tile(mean, (test_e.shape[0], 1))
    clf = MLPClassifier(
        hidden_layer_sizes=(MLP_HIDDEN,),
        alpha=1e-3,
        early_stopping=True,
        max_iter=300,
        random_state=seed,
    ).fit(train_e[full], y)
    out: F64 = np.asarray(clf.predict_proba(test_e), np.float64)
    return out


def task_complexity(train_e: F32, s: F64, have: NDArray[np.bool_], test_e: F32, seed: int) -> F64:
    from sklearn.cluster import KMeans
    from sklearn.linear_model import Ridge

    a, b = _unit(train_e), _unit(test_e)
    n_tasks = min(N_TASKS, a.shape[0])
    km = KMeans(n_clusters=n_tasks, n_init=4, random_state=seed).fit(a)
    fail = 1.0 - (s * have).sum(axis=1) / np.maximum(have.sum(axis=1), 1)
    reg = Ridge(alpha=10.0).fit(a, fail)
    cuts = np.quantile(reg.predict(a), np.linspace(0, 1, N_LEVELS + 1)[1:-1])

    def classes(x: F32) -> NDArray[np.int64]:
        level = np.searchsorted(cuts, reg.predict(x))
        out: NDArray[np.int64] = km.predict(x) * N_LEVELS + level
        return out

    ca, cb = classes(a), classes(b)
    arm_mean = (s * have).sum(axis=0) / np.maximum(have.sum(axis=0), 1)
    n_classes = n_tasks * N_LEVELS
    table = np.tile(arm_mean, (n_classes, 1))
    for c in range(n_classes):
        rows = ca == c
        num = (s[rows] * have[rows]).sum(axis=0)
        den = have[rows].sum(axis=0)
        table[c] = (num + CELL_PRIOR * arm_mean) / (den + CELL_PRIOR)
    result: F64 = table[cb]
    return result


def predict_all(
    names: Sequence[str],
    x_train: F32,
    s: F64,
    have: NDArray[np.bool_],
    x_test: F32,
    seed: int,
) -> dict[str, F64]:
    """Predicted scores (N_test, A) of every baseline, keyed by name."""
    cols = embedding_columns(names)
    ea = np.asarray(x_train[:, cols], np.float32)
    eb = np.asarray(x_test[:, cols], np.float32)
    return {
        "knn20": knn(ea, s, have, eb),
        "logreg": logreg(ea, s, have, eb),
        "mf": matrix_factorisation(ea, s, have, eb, seed),
        "mlp": mlp(ea, s, have, eb, seed),
        "task_complexity": task_complexity(ea, s, have, eb, seed),
    }


__all__ = [
    "NAMES",
    "embedding_columns",
    "knn",
    "logreg",
    "matrix_factorisation",
    "mlp",
    "predict_all",
    "task_complexity",
]

"""Blending learners on their out-of-fold predictions: non-negative weights summing to 1 that minimise log loss.

The blend's own CV estimate is cross-fitted: the rows of each fold are blended with weights fitted on the other
folds' OOF rows only, so no row scores the weights that it helped to fit.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

EPS = 1e-7


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1)).mean())


def fit_weights(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights [L] on the simplex minimising the log loss of sum_l w_l probs[:, l] ([N, L, K] OOF probabilities)."""
    learners = probs.shape[1]
    if learners == 1:
        return np.ones(1)
    picked = np.clip(probs[np.arange(len(y)), :, y], EPS, 1)  # [N, L]: each learner's probability of the truth

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = picked @ w
        return float(-np.log(mix).mean()), -(picked / mix[:, None]).mean(0)

    result = minimize(loss, np.full(learners, 1 / learners), jac=True, method="SLSQP",
                      bounds=[(0, 1)] * learners, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    w = np.clip(result.x, 0, None)
    return w / w.sum()


def blended(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nlk,l->nk", probs, w)


def cross_fitted(probs: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """[N, K]: each fold's rows blended with weights fitted on the other folds' rows (one repeat's OOF)."""
    out = np.zeros(probs[:, 0].shape)
    for fold in np.unique(fold_of[fold_of >= 0]):
        rows = fold_of == fold
        others = (fold_of >= 0) & ~rows
        out[rows] = blended(probs[rows], fit_weights(probs[others], y[others]))
    return out


def choose(probs: np.ndarray, y: np.ndarray, fold_of: np.ndarray, method: str) -> dict:
    """The blend to serve, fitted on all OOF rows of every repeat ([R, N, L, K] probs, [R, N] fold_of), with
    the cross-fitted evidence: per fold, the log loss of fitted weights vs the plain mean. `auto` keeps the
    weights only when they beat the mean by more than two standard errors of that paired difference."""
    repeats, learners = probs.shape[0], probs.shape[2]
    fitted = np.stack([cross_fitted(probs[r], y, fold_of[r]) for r in range(repeats)])
    mean = probs.mean(axis=2)
    gain = np.array([log_loss(mean[r][fold_of[r] == f], y[fold_of[r] == f])
                     - log_loss(fitted[r][fold_of[r] == f], y[fold_of[r] == f])
                     for r in range(repeats) for f in np.unique(fold_of[r][fold_of[r] >= 0])])
    noise = 2 * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.inf
    use = method if method != "auto" else ("weights" if gain.mean() > noise else "mean")
    seen = fold_of >= 0
    weights = (fit_weights(probs[seen], np.broadcast_to(y, fold_of.shape)[seen]) if use == "weights"
               else np.full(learners, 1 / learners))
    return {"method": use, "weights": weights.tolist(), "oof": fitted if use == "weights" else mean,
            "logloss_gain_of_weights": {"mean": float(gain.mean()), "sd": float(gain.std(ddof=1)) if len(gain) > 1
                                        else 0.0, "folds": len(gain), "two_se": float(noise)}}

"""Blending learners on their out-of-fold predictions: non-negative weights summing to 1.

The weights minimise a proper score of the blend (log loss of probabilities, squared error of regression values in
transform(y) units), which is smooth where most competition metrics are not; whether they are served instead of the
plain mean is judged by the competition's metric. The blend's own CV estimate is cross-fitted: the rows of each
fold are blended with weights fitted on the other folds' OOF rows only, so no row scores the weights it helped fit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

EPS = 1e-7


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1)).mean())


def fit_weights(preds: np.ndarray, y: np.ndarray, values: bool) -> np.ndarray:
    """Weights [L] on the simplex for OOF predictions [N, L, K]: minimising the blend's log loss (class
    probabilities, y class indices) or with `values` its squared error (K = 1, y in the predictions' units)."""
    learners = preds.shape[1]
    if learners == 1:
        return np.ones(1)
    if values:
        loss = _squared_error(preds[:, :, 0], np.asarray(y, dtype=float))
    else:
        loss = _log_loss(np.clip(preds[np.arange(len(y)), :, y], EPS, 1))  # [N, L]: each one's p(truth)
    result = minimize(loss, np.full(learners, 1 / learners), jac=True, method="SLSQP",
                      bounds=[(0, 1)] * learners, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    w = np.clip(result.x, 0, None)
    return w / w.sum()


def _log_loss(picked: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = picked @ w
        return float(-np.log(mix).mean()), -(picked / mix[:, None]).mean(0)

    return loss


def _squared_error(values: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    scale = float(np.var(y)) or 1.0  # a loss near 1 keeps SLSQP's tolerances meaningful

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        residual = values @ w - y
        return float((residual**2).mean() / scale), 2 * (values * residual[:, None]).mean(0) / scale

    return loss


def blended(preds: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nlk,l->nk", preds, w)


def cross_fitted(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, values: bool) -> np.ndarray:
    """[N, K]: each fold's rows blended with weights fitted on the other folds' rows (one repeat's OOF)."""
    out = np.zeros(preds[:, 0].shape)
    for fold in np.unique(fold_of[fold_of >= 0]):
        rows = fold_of == fold
        others = (fold_of >= 0) & ~rows
        out[rows] = blended(preds[rows], fit_weights(preds[others], y[others], values))
    return out


def choose(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, method: str,
           gain: Callable[[np.ndarray, np.ndarray], float], values: bool) -> dict:
    """The blend to serve, fitted on all OOF rows of every repeat ([R, N, L, K] preds, [R, N] fold_of; y and
    `values` as fit_weights takes them), with the cross-fitted evidence: per fold, the metric's gain of fitted weights
    over the plain mean (`gain(a, rows) - gain(b, rows)` with gain(pred, rows) = the metric, signed so more is
    better). `auto` keeps the weights only when they beat the mean by more than two standard errors of that paired
    difference."""
    repeats, learners = preds.shape[0], preds.shape[2]
    fitted = np.stack([cross_fitted(preds[r], y, fold_of[r], values) for r in range(repeats)])
    mean = preds.mean(axis=2)
    gains = []
    for r in range(repeats):
        for f in np.unique(fold_of[r][fold_of[r] >= 0]):
            rows = fold_of[r] == f
            gains.append(gain(fitted[r][rows], rows) - gain(mean[r][rows], rows))
    gains = np.array(gains)
    noise = 2 * gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else np.inf
    use = method if method != "auto" else ("weights" if gains.mean() > noise else "mean")
    seen = fold_of >= 0
    weights = (fit_weights(preds[seen], np.broadcast_to(y, fold_of.shape)[seen], values) if use == "weights"
               else np.full(learners, 1 / learners))
    return {"method": use, "weights": weights.tolist(), "oof": fitted if use == "weights" else mean,
            "gain_of_weights": {"mean": float(gains.mean()), "sd": float(gains.std(ddof=1)) if len(gains) > 1
                                else 0.0, "folds": len(gains), "two_se": float(noise)}}

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
NEGLIGIBLE = 1e-6  # a fitted weight below this is 0 (it moves no probability by more than 1e-6)
ROUNDS = 25  # ensemble selection's rounds: weights in steps of 1/25 (AutoGluon's WeightedEnsemble uses 25)
SELECT_ROWS = 100_000  # rows ensemble selection scores at most (a ROC AUC of 800,000 rows costs ~0.15 s, and a
# selection scores rounds x learners mixes)


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
    w[w < NEGLIGIBLE] = 0.0  # the solver's rounding (1e-17 where the optimum is 0): not worth serving a learner for
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


def select(preds: np.ndarray, rows: np.ndarray, gain: Callable[[np.ndarray, np.ndarray], float],
           rounds: int = ROUNDS) -> np.ndarray:
    """Caruana et al.'s ensemble selection (2004; AutoGluon's WeightedEnsemble): `rounds` times, add (with
    replacement) the learner whose predictions most improve the competition's metric of the running mean; the
    weights [L] are how often each was added. preds [n, L, K]: the rows the mask `rows` picks; gain(pred, rows):
    the metric, signed so that more is better. Past SELECT_ROWS rows, a seeded sample of them is scored."""
    if preds.shape[1] == 1:
        return np.ones(1)
    where = np.flatnonzero(rows)
    if len(where) > SELECT_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(len(where), SELECT_ROWS, replace=False))
        preds, rows = preds[keep], np.zeros_like(rows)
        rows[where[keep]] = True
    total, counts = np.zeros(preds[:, 0].shape), np.zeros(preds.shape[1])
    for k in range(1, rounds + 1):
        best = max(range(len(counts)), key=lambda i: gain((total + preds[:, i]) / k, rows))
        counts[best] += 1
        total += preds[:, best]
    return counts / rounds


def cross_fitted(preds: np.ndarray, fold_of: np.ndarray, fit: Callable[[np.ndarray, np.ndarray], np.ndarray]
                 ) -> np.ndarray:
    """[N, K]: each fold's rows blended with weights `fit(preds, rows)` found on the other folds' rows only (one
    repeat's OOF)."""
    out = np.zeros(preds[:, 0].shape)
    for fold in np.unique(fold_of[fold_of >= 0]):
        rows = fold_of == fold
        others = (fold_of >= 0) & ~rows
        out[rows] = blended(preds[rows], fit(preds[others], others))
    return out


def paired(better: np.ndarray, base: np.ndarray, fold_of: np.ndarray, gain) -> dict:
    """The per-fold gain of one cross-fitted blend over another ([R, N, K] each) in the competition's metric: its
    mean, sd, folds and two standard errors."""
    gains = np.array([gain(better[r][fold_of[r] == f], fold_of[r] == f) - gain(base[r][fold_of[r] == f],
                                                                              fold_of[r] == f)
                      for r in range(len(fold_of)) for f in np.unique(fold_of[r][fold_of[r] >= 0])])
    two_se = 2 * gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else np.inf
    return {"mean": float(gains.mean()), "sd": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
            "folds": len(gains), "two_se": float(two_se)}


def choose(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, method: str,
           gain: Callable[[np.ndarray, np.ndarray], float], values: bool) -> dict:
    """The blend to serve, fitted on all OOF rows of every repeat ([R, N, L, K] preds, [R, N] fold_of; y and
    `values` as fit_weights takes them), with the cross-fitted evidence: per fold, the metric's gain
    (`gain(pred, rows)`, signed so more is better) of fitted weights over the plain mean, and of ensemble selection
    (`select`, which optimises the metric itself) over whichever of the two is kept, on the first repeat's folds
    (a selection scores rounds x learners mixes: cross-fitting it in every repeat of a long TIME= run took a
    minute). `auto` keeps each only when it beats what it would replace by more than two standard errors of that
    paired difference."""
    repeats, learners = preds.shape[0], preds.shape[2]
    fits = {"mean": lambda p, rows: np.full(learners, 1 / learners),
            "weights": lambda p, rows: fit_weights(p, y[rows], values),
            "greedy": lambda p, rows: select(p, rows, gain)}
    oof = {name: np.stack([cross_fitted(preds[r], fold_of[r], fit) for r in range(repeats)])
           for name, fit in fits.items() if name != "greedy"}
    evidence = {"weights": paired(oof["weights"], oof["mean"], fold_of, gain)}
    use = "weights" if evidence["weights"]["mean"] > evidence["weights"]["two_se"] else "mean"
    first = cross_fitted(preds[0], fold_of[0], fits["greedy"])[None]  # judged on the first repeat's folds
    evidence["greedy"] = paired(first, oof[use][:1], fold_of[:1], gain) | {"over": use}
    if evidence["greedy"]["mean"] > evidence["greedy"]["two_se"]:
        use = "greedy"
    use = method if method != "auto" else use
    if use == "greedy":
        oof["greedy"] = np.concatenate([first] + [cross_fitted(preds[r], fold_of[r], fits["greedy"])[None]
                                                  for r in range(1, repeats)])
    seen = fold_of >= 0
    everywhere = seen.all(0)  # rows every repeat validated: their bag over repeats is what ensemble selection sees
    weights = {"mean": lambda: fits["mean"](preds, seen),
               "weights": lambda: fit_weights(preds[seen], np.broadcast_to(y, fold_of.shape)[seen], values),
               "greedy": lambda: select(preds.mean(0)[everywhere], everywhere, gain)}[use]()
    return {"method": use, "weights": weights.tolist(), "oof": oof[use], "gain_of_weights": evidence["weights"],
            "gain_of_selection": evidence["greedy"]}

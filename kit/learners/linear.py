"""Learner `linear`: LogisticRegression for classes, RidgeCV for values. On the automatic encoding it sees one-hot
categories and de-skewed, standardised numbers with missing indicators (kit/encoding.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.errors import KitError
from kit.learners import register
from kit.learners.compiled import Compiled

RIDGE_ALPHAS = np.logspace(-3, 4, 15)  # RidgeCV's candidates, chosen by leave-one-out on the fold


@dataclass
class LinearConfig:
    """Learner `linear`: L2-regularised LogisticRegression (classes) or RidgeCV (values) on the encoded features."""

    C: float = 1.0  # classification: inverse regularisation strength (smaller is stronger); regression: RidgeCV
    # picks its own strength by leave-one-out on the fold
    max_iter: int = 1000  # solver iterations at most (lbfgs)

    def ranges(self) -> list[tuple[str, float, float, float]]:
        return [("C", self.C, 1e-9, 1e9), ("max_iter", self.max_iter, 1, 1_000_000)]

    def space(self, target, rows: int) -> dict[str, tuple[float, float]]:
        """What `make tune` searches (log scale): the strength for classes; RidgeCV picks its own for values."""
        return {} if target.predicts_values else {"C": (1e-3, 100.0)}


@register
class Linear(Compiled):
    name = "linear"
    stops = False  # one solver call: under a budget it fits first, and the others share what it leaves
    settings = LinearConfig
    classes = ("sklearn.linear_model", "LogisticRegression", "RidgeCV")
    pip = "'scikit-learn>=1.3'"

    def estimator(self, config, target, rows: int, seed: int):
        cls = self.estimator_class(target)
        if target.predicts_values:
            return cls(alphas=RIDGE_ALPHAS)
        return cls(C=config.linear.C, max_iter=config.linear.max_iter)

    def compile(self, model):
        return compile_linear(model)


def compile_linear(model):
    """A fitted LogisticRegression or Ridge/RidgeCV as a LinearModel whose output matches model.predict_proba
    (binary: [1 - sigmoid, sigmoid] of the one score; multiclass: the softmax of the K scores) or model.predict
    as [N, 1]."""
    import torch
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV

    from kit.trees import LinearModel

    if not isinstance(model, (LogisticRegression, Ridge, RidgeCV)) or not hasattr(model, "coef_"):
        raise KitError(f"compile_linear takes a fitted LogisticRegression or Ridge, got {type(model).__name__}")
    regressor = not isinstance(model, LogisticRegression)
    weight = np.asarray(model.coef_, dtype=np.float64).reshape(1 if regressor else -1, model.coef_.shape[-1])
    return LinearModel(weight=torch.from_numpy(weight.copy()),
                       bias=torch.from_numpy(np.asarray(model.intercept_, dtype=np.float64).reshape(-1).copy()),
                       identity=torch.tensor(regressor))

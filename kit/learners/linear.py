"""Learner `linear`: LogisticRegression for classes, RidgeCV for values. On the automatic encoding it sees one-hot
categories and de-skewed, standardised numbers with missing indicators (kit/encoding.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


@register
class Linear(Compiled):
    name = "linear"
    settings = LinearConfig
    classes = ("sklearn.linear_model", "LogisticRegression", "RidgeCV")
    pip = "'scikit-learn>=1.3'"

    def estimator(self, config, target, rows: int, seed: int):
        cls = self.estimator_class(target)
        if target.predicts_values:
            return cls(alphas=RIDGE_ALPHAS)
        return cls(C=config.linear.C, max_iter=config.linear.max_iter)

    def compile(self, model):
        from kit import trees

        return trees.compile_linear(model)

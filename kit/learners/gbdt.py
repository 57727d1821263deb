"""Learner `gbdt`: scikit-learn's HistGradientBoosting on the fold's features (ordinal category codes).

Why it: it ships with scikit-learn (already a dependency: no new install, nothing pins onnx), it is deterministic
for a seed, fast on small tables, and its fitted trees are plain node arrays that compile into a tensor program for
TorchScript and ONNX. LightGBM did not beat it on any development competition (docs/tables.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kit.learners import register
from kit.learners.compiled import Compiled, early_stopping


@dataclass
class GBDTConfig:
    """Learner `gbdt`: scikit-learn's HistGradientBoosting (classifier or regressor) on the fold's features."""

    learning_rate: float = 0.05  # shrinkage of each tree's contribution
    max_iter: int = 1000  # boosting rounds (the most, with early stopping)

    # Stop when 10% of the fold's training part, held out, has not improved for 20 rounds. auto: on from 10,000
    # training rows (below, a fixed max_iter fits every fold the same way)
    early_stopping: bool | Literal["auto"] = "auto"
    max_leaf_nodes: int = 31  # leaves per tree at most
    max_depth: int = 0  # 0: unlimited (max_leaf_nodes bounds the trees)
    min_samples_leaf: int = 20  # training rows per leaf at least
    l2_regularization: float = 1.0  # L2 penalty on the leaf values

    def ranges(self) -> list[tuple[str, float, float, float]]:
        return [("max_iter", self.max_iter, 1, 100_000), ("max_leaf_nodes", self.max_leaf_nodes, 2, 100_000),
                ("max_depth", self.max_depth, 0, 1_000), ("min_samples_leaf", self.min_samples_leaf, 1, 1_000_000),
                ("learning_rate", self.learning_rate, 1e-6, 10.0),
                ("l2_regularization", self.l2_regularization, 0, 1e6)]


@register
class GBDT(Compiled):
    name = "gbdt"
    reads = "ordinal"
    settings = GBDTConfig
    classes = ("sklearn.ensemble", "HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
    pip = "'scikit-learn>=1.3'"

    def estimator(self, config, target, rows: int, seed: int):
        g = config.gbdt
        return self.estimator_class(target)(
            learning_rate=g.learning_rate, max_iter=g.max_iter, max_leaf_nodes=g.max_leaf_nodes,
            max_depth=g.max_depth or None, min_samples_leaf=g.min_samples_leaf, l2_regularization=g.l2_regularization,
            early_stopping=early_stopping(g.early_stopping, rows), validation_fraction=0.1, n_iter_no_change=20,
            random_state=seed)

    def compile(self, model):
        from kit import trees

        return trees.compile_hgb(model)

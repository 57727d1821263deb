"""Learner `gbdt`: scikit-learn's HistGradientBoosting on the fold's features (ordinal category codes).

Why it: it ships with scikit-learn (already a dependency: no new install, nothing pins onnx), it is deterministic
for a seed, fast on small tables, and its fitted trees are plain node arrays that compile into a tensor program for
TorchScript and ONNX. LightGBM did not beat it on any development competition (docs/tables.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kit.errors import KitError
from kit.learners import register
from kit.learners.compiled import Compiled, early_stopping, sample_rows

CHUNK = 25  # rounds fitted at a time under a budget's deadline (each chunk's fit bins the rows again)
MAX_ROWS = 200_000  # as catboost.max_rows; chosen on the million-row table (docs/tables.md "Scale")


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
    # Training rows it fits on at most (a random sample of the fold's training part beyond; 0: all): on an
    # 800,000-row fold all rows took 300 s of a 590 s fold (docs/tables.md "Scale")
    max_rows: int = MAX_ROWS

    def ranges(self) -> list[tuple[str, float, float, float]]:
        return [("max_iter", self.max_iter, 1, 100_000), ("max_leaf_nodes", self.max_leaf_nodes, 2, 100_000),
                ("max_depth", self.max_depth, 0, 1_000), ("min_samples_leaf", self.min_samples_leaf, 1, 1_000_000),
                ("learning_rate", self.learning_rate, 1e-6, 10.0),
                ("l2_regularization", self.l2_regularization, 0, 1e6), ("max_rows", self.max_rows, 0, 1e12)]

    def space(self, target, rows: int) -> dict[str, tuple[float, float]]:
        """What `make tune` searches (log scale; whole numbers where the default is one): with early stopping the
        rounds are found by it, else they are searched too."""
        rounds = {} if early_stopping(self.early_stopping, rows) else {"max_iter": (50, 2000)}
        return {"learning_rate": (0.01, 0.3), "max_leaf_nodes": (7, 127), "min_samples_leaf": (2, 200),
                "l2_regularization": (1e-3, 30.0), **rounds}


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

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int, deadline=None):
        """At most gbdt.max_rows of the rows (a sample drawn by `seed`). With a `deadline`, the rounds are fitted
        CHUNK at a time (warm start: the same trees as one fit) until early stopping, max_iter or the deadline."""
        x, y = sample_rows(x, y, config.gbdt.max_rows, seed, "gbdt.max_rows")
        if deadline is None:
            return super().fit_estimator(config, target, x, y, seed)
        model = self.estimator(config, target, len(x), seed)
        rounds = model.max_iter
        model.set_params(max_iter=min(CHUNK, rounds), warm_start=True)
        while True:
            self.fit_model(model, x, y)
            if model.n_iter_ < model.max_iter or model.max_iter == rounds or deadline.passed():
                return model
            model.set_params(max_iter=min(model.max_iter + CHUNK, rounds))

    def compile(self, model):
        return compile_hgb(model)


def _refuse_unsupported(model) -> None:
    """KitError for what the flat walk cannot reproduce. Categorical splits test category sets, not thresholds, and
    a model fit with categorical features ordinal-encodes and reorders its columns before its trees see them (every
    categorical split is on such a feature), so such a model is refused whole: kit feeds numeric features."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if not isinstance(model, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        raise KitError(f"compile_hgb takes a HistGradientBoosting model, got {type(model).__name__}")
    if not hasattr(model, "_predictors"):
        raise KitError("the HistGradientBoostingClassifier is not fitted; fit it before compiling it")
    if model.is_categorical_ is not None:
        columns = np.flatnonzero(model.is_categorical_).tolist()
        raise KitError(f"the HistGradientBoostingClassifier was fit with categorical features (columns {columns}), "
                       "whose categorical splits cannot be compiled; kit feeds numeric features: refit it with "
                       "categorical_features=None")


def compile_hgb(model):
    """A fitted HistGradientBoostingClassifier (binary or multiclass, numeric features) or squared-error
    HistGradientBoostingRegressor as a TreeEnsemble whose output matches model.predict_proba (model.predict as
    [N, 1]) on NaN-free float32 rows. Mirrors scikit-learn's _predict_from_raw_data:
    a numeric split sends `x <= num_threshold` left; missing_go_to_left is not needed since kit imputes features."""
    import torch

    from kit.trees import TreeEnsemble

    _refuse_unsupported(model)
    trees = [predictor.nodes for iteration in model._predictors for predictor in iteration]
    sizes = [len(tree) for tree in trees]
    starts = np.cumsum([0] + sizes[:-1])
    nodes = np.concatenate(trees)
    leaf = nodes["is_leaf"].astype(bool)
    own = np.arange(len(nodes))
    offset = np.repeat(starts, sizes)  # child indices are per tree; packed, they shift by the tree's start
    n_classes = model.n_trees_per_iteration_  # trees of iteration i are i*K .. i*K+K-1, one per class score
    return TreeEnsemble(
        feature=torch.from_numpy(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64)),
        threshold=torch.from_numpy(np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64)),
        left=torch.from_numpy(np.where(leaf, own, nodes["left"] + offset).astype(np.int64)),
        right=torch.from_numpy(np.where(leaf, own, nodes["right"] + offset).astype(np.int64)),
        value=torch.from_numpy(nodes["value"].astype(np.float64)),
        roots=torch.from_numpy(starts.astype(np.int64)),
        class_map=torch.from_numpy(np.eye(n_classes)[np.arange(len(trees)) % n_classes]),
        baseline=torch.from_numpy(model._baseline_prediction.reshape(-1).astype(np.float64)),
        depth=torch.tensor(int(nodes["depth"][leaf].max()), dtype=torch.int64),
        identity=torch.tensor(not hasattr(model, "classes_")),
    )

"""Learner `xgboost`: XGBoost's depth-wise histogram trees on the fold's features (ordinal category codes, as `gbdt`
gets them), compiled into the same tree walk (kit/trees.py, compile_xgboost). An optional package (the `dev` extra
installs it): kit asks for it only when `xgboost` is in a competition's learners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kit.learners import register
from kit.learners.compiled import SMALL, Compiled, early_stopping

# Without early stopping (small tables): XGBoost's own defaults, 100 rounds at learning rate 0.3 (or max_iter rounds
# if fewer). Its defaults are tuned for fitting without a validation set; 0.05 for up to 2,000 rounds is the recipe
# when a hold-out picks the round, and with no hold-out a fixed 2,000 rounds at 0.05 on a few hundred rows overfits.
SMALL_TABLE_ROUNDS = 100
SMALL_TABLE_LEARNING_RATE = 0.3
PATIENCE = 50  # early stopping: rounds without improvement on the held-out 10% before stopping


@dataclass
class XGBoostConfig:
    """Learner `xgboost`: XGBoost's histogram trees (classifier or regressor) on the fold's features, numeric codes
    for categories as `gbdt` gets them."""

    # From 10,000 training rows: up to max_iter rounds at learning_rate, stopping when 10% of the fold's training
    # part, held out, has not improved for 50 rounds. Below: XGBoost's own defaults (100 rounds, or max_iter if
    # fewer, at learning rate 0.3), as a hold-out of a few hundred rows is too noisy to stop on.
    early_stopping: bool | Literal["auto"] = "auto"
    learning_rate: float = 0.05  # shrinkage per tree, with early stopping
    max_iter: int = 2000  # boosting rounds at most, with early stopping
    max_depth: int = 6  # splits from the root to a leaf at most (trees grow level by level)
    min_child_weight: float = 1.0  # hessian sum per leaf at least (for squared error: training rows per leaf)
    reg_lambda: float = 1.0  # L2 penalty on the leaf values
    max_bin: int = 256  # histogram bins per feature (the split candidates)

    def ranges(self) -> list[tuple[str, float, float, float]]:
        return [("max_iter", self.max_iter, 1, 100_000), ("learning_rate", self.learning_rate, 1e-6, 10.0),
                ("max_depth", self.max_depth, 1, 64), ("min_child_weight", self.min_child_weight, 0, 1e9),
                ("reg_lambda", self.reg_lambda, 0, 1e6), ("max_bin", self.max_bin, 2, 65_536)]


@register
class XGBoost(Compiled):
    name = "xgboost"
    reads = "ordinal"
    settings = XGBoostConfig
    classes = ("xgboost", "XGBClassifier", "XGBRegressor")
    pip = "xgboost"

    def estimator(self, config, target, rows: int, seed: int):
        """Early stopping from EARLY_STOPPING_ROWS (see XGBoostConfig), else XGBoost's small-table defaults."""
        c = config.xgboost
        if target.predicts_values:
            objective = "reg:squarederror"
        else:
            objective = "multi:softprob" if target.width > 2 else "binary:logistic"
        common = dict(objective=objective, tree_method="hist", max_depth=c.max_depth,
                      min_child_weight=c.min_child_weight, reg_lambda=c.reg_lambda, max_bin=c.max_bin,
                      random_state=seed, n_jobs=1 if rows < SMALL else None, verbosity=0)
        cls = self.estimator_class(target)
        if early_stopping(c.early_stopping, rows):
            return cls(n_estimators=c.max_iter, learning_rate=c.learning_rate, early_stopping_rounds=PATIENCE,
                       **common)
        return cls(n_estimators=min(c.max_iter, SMALL_TABLE_ROUNDS), learning_rate=SMALL_TABLE_LEARNING_RATE,
                   **common)

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int):
        """With early stopping, on 90% of the rows, stopping on the other 10% (drawn by `seed`)."""
        model = self.estimator(config, target, len(x), seed)
        if model.get_params()["early_stopping_rounds"] is None:
            return super().fit_estimator(config, target, x, y, seed)
        held = np.random.default_rng(seed).random(len(x)) < 0.1
        return model.fit(x[~held], y[~held], eval_set=[(x[held], y[held])], verbose=False)

    def compile(self, model):
        from kit import trees

        return trees.compile_xgboost(model)

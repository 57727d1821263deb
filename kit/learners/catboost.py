"""Learner `catboost`: CatBoost's oblivious trees on the fold's features (ordinal category codes, as `gbdt` gets
them), compiled into the same tree walk (vector leaves for multiclass). It beat `gbdt` beyond the noise by repeated
CV on california-housing (docs/tables.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kit.learners import register
from kit.learners.compiled import SMALL, Compiled, early_stopping

SMALL_TABLE_ROUNDS = 1000  # CatBoost's default rounds, at the learning rate it picks for them and the rows


@dataclass
class CatBoostConfig:
    """Learner `catboost`: CatBoost's oblivious trees (classifier or regressor) on the fold's features, numeric
    codes for categories as `gbdt` gets them."""

    # From 10,000 training rows: up to max_iter rounds at learning_rate, stopping when 10% of the fold's training
    # part, held out, has not improved for 100 rounds. Below: CatBoost's own recipe for small tables (1,000 rounds,
    # or max_iter if fewer, at the learning rate it picks for the rows), as a hold-out of a few hundred rows is too
    # noisy to stop on.
    early_stopping: bool | Literal["auto"] = "auto"
    learning_rate: float = 0.05  # shrinkage per tree, with early stopping
    max_iter: int = 3000  # boosting rounds at most, with early stopping
    depth: int = 6  # every tree tests `depth` splits, one per level
    l2_leaf_reg: float = 3.0  # L2 penalty on the leaf values
    # Training rows CatBoost fits on at most (a random sample of the fold's training part beyond; 0: all): a round
    # costs time in proportion to the rows (200 rounds on 200,000 rows: 51 s on one busy core), and early stopping
    # may take 3,000 rounds, so an 800,000-row fold on all its rows could take most of an hour.
    max_rows: int = 200_000

    def ranges(self) -> list[tuple[str, float, float, float]]:
        return [("max_iter", self.max_iter, 1, 100_000), ("learning_rate", self.learning_rate, 1e-6, 10.0),
                ("depth", self.depth, 1, 16), ("l2_leaf_reg", self.l2_leaf_reg, 0, 1e6),
                ("max_rows", self.max_rows, 0, 1e12)]


@register
class CatBoost(Compiled):
    name = "catboost"
    reads = "ordinal"
    settings = CatBoostConfig
    classes = ("catboost", "CatBoostClassifier", "CatBoostRegressor")
    pip = "catboost"

    def estimator(self, config, target, rows: int, seed: int):
        """Early stopping from EARLY_STOPPING_ROWS (see CatBoostConfig), else CatBoost's small-table recipe."""
        c = config.catboost
        common = dict(depth=c.depth, l2_leaf_reg=c.l2_leaf_reg, random_seed=seed, verbose=0,
                      allow_writing_files=False, thread_count=1 if rows < SMALL else -1)
        if target.width > 2:
            common["loss_function"] = "MultiClass"
        cls = self.estimator_class(target)
        if early_stopping(c.early_stopping, rows):
            return cls(iterations=c.max_iter, learning_rate=c.learning_rate, early_stopping_rounds=100,
                       use_best_model=True, **common)
        return cls(iterations=min(c.max_iter, SMALL_TABLE_ROUNDS), **common)

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int):
        """At most catboost.max_rows of the rows (a sample drawn by `seed`); with early stopping, on 10% of those."""
        if 0 < config.catboost.max_rows < len(x):
            rows = np.sort(np.random.default_rng(seed).choice(len(x), config.catboost.max_rows, replace=False))
            x, y = x[rows], y[rows]
        model = self.estimator(config, target, len(x), seed)
        if not model.get_param("use_best_model"):
            return super().fit_estimator(config, target, x, y, seed)
        held = np.random.default_rng(seed).random(len(x)) < 0.1
        return model.fit(x[~held], y[~held], eval_set=(x[held], y[held]))

    def compile(self, model):
        from kit import trees

        return trees.compile_catboost(model)

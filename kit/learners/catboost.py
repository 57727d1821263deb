"""Learner `catboost`: CatBoost's oblivious trees on the fold's features (ordinal category codes, as `gbdt` gets
them), compiled into the same tree walk (vector leaves for multiclass). It beat `gbdt` beyond the noise by repeated
CV on california-housing (docs/tables.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kit.budget import Deadline
from kit.errors import KitError
from kit.learners import register
from kit.learners.compiled import SMALL, Compiled, early_stopping, sample_rows

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

    def space(self, target, rows: int) -> dict[str, tuple[float, float]]:
        """What `make tune` searches (log scale; whole numbers where the default is one). Without early stopping
        CatBoost picks its own learning rate for the rows, so the rate is searched only with it."""
        rate = {"learning_rate": (0.01, 0.3)} if early_stopping(self.early_stopping, rows) else {}
        return {"depth": (4, 10), "l2_leaf_reg": (0.3, 30.0), **rate}


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

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int, deadline=None):
        """At most catboost.max_rows of the rows (a sample drawn by `seed`); with early stopping, on 90% of those,
        stopping on the other 10%; at `deadline` (kit/budget.py), the rounds so far."""
        x, y = sample_rows(x, y, config.catboost.max_rows, seed, "catboost.max_rows")
        model = self.estimator(config, target, len(x), seed)
        stop = {"callbacks": [StopAt(deadline)]} if deadline else {}  # with early stopping: its best round so far
        if not model.get_param("use_best_model"):
            return self.fit_model(model, x, y, **stop)
        held = np.random.default_rng(seed).random(len(x)) < 0.1
        return model.fit(x[~held], y[~held], eval_set=(x[held], y[held]), **stop)

    def compile(self, model):
        return compile_catboost(model)


def compile_catboost(model):
    """A fitted CatBoostClassifier (Logloss or MultiClass) or CatBoostRegressor (RMSE) on numeric features as
    ObliviousTrees whose output matches predict_proba (predict as [N, 1]) on NaN-free rows (kit imputes features).
    CatBoost's trees are oblivious: a depth-d tree applies one split per level, and its leaf index is
    sum_i (x[f_i] > border_i) << i over its splits in order, which is what the module computes; the model's scale
    goes into the leaf values and its bias into the baseline."""
    import torch

    from kit.trees import ObliviousTrees

    spec = catboost_json(model)
    scale, bias = spec["scale_and_bias"]
    flat = [f["flat_feature_index"] for f in spec["features_info"].get("float_features", [])]
    trees, k = spec["oblivious_trees"], len(bias)
    depth = max((len(t.get("splits") or []) for t in trees), default=0)
    feature = np.zeros((len(trees), depth), np.int64)
    border = np.full((len(trees), depth), np.inf)  # a shallower tree's missing levels never go right
    value = np.zeros((len(trees), 2**depth, k))
    for t, tree in enumerate(trees):
        splits = tree.get("splits") or []
        if any(split["split_type"] != "FloatFeature" for split in splits):
            raise KitError("the CatBoost model has categorical or combined splits, which cannot be compiled; kit "
                           "feeds numeric features: fit it without cat_features")
        feature[t, :len(splits)] = [flat[s["float_feature_index"]] for s in splits]
        border[t, :len(splits)] = [s["border"] for s in splits]
        value[t, :2 ** len(splits)] = scale * np.asarray(tree["leaf_values"], dtype=np.float64).reshape(-1, k)
    return ObliviousTrees(
        feature=torch.from_numpy(feature), border=torch.from_numpy(border),
        value=torch.from_numpy(value[..., 0].copy() if k == 1 else value),
        baseline=torch.tensor(bias, dtype=torch.float64),
        identity=torch.tensor(not hasattr(model, "predict_proba")))


def catboost_json(model) -> dict:
    """The fitted CatBoost model in its documented JSON form (save_model(format="json"))."""
    import json
    import tempfile
    from pathlib import Path

    if not getattr(model, "is_fitted", lambda: False)():
        raise KitError(f"compile_catboost takes a fitted CatBoost model, got {type(model).__name__}")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_model(str(Path(tmp) / "model.json"), format="json")
        return json.loads((Path(tmp) / "model.json").read_text())


@dataclass
class StopAt:
    """CatBoost's callback: go on to the next round while `deadline` (kit/budget.py) has not passed."""

    deadline: Deadline

    def after_iteration(self, info) -> bool:
        return not self.deadline.passed()

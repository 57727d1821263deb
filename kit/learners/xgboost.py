"""Learner `xgboost`: XGBoost's depth-wise histogram trees on the fold's features (ordinal category codes, as `gbdt`
gets them), compiled into the same tree walk (kit/trees.py, compile_xgboost). An optional package (the `dev` extra
installs it): kit asks for it only when `xgboost` is in a competition's learners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kit.errors import KitError
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

    def space(self, target, rows: int) -> dict[str, tuple[float, float]]:
        """What `make tune` searches (log scale; whole numbers where the default is one). Without early stopping
        XGBoost's own defaults fix the rounds and the rate, so the rate is searched only with it."""
        rate = {"learning_rate": (0.01, 0.3)} if early_stopping(self.early_stopping, rows) else {}
        return {"max_depth": (2, 10), "min_child_weight": (0.5, 50.0), "reg_lambda": (0.01, 30.0), **rate}


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

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int, deadline=None):
        """With early stopping, on 90% of the rows, stopping on the other 10% (drawn by `seed`); at `deadline`, the
        rounds so far."""
        model = self.estimator(config, target, len(x), seed)
        if deadline:
            model.set_params(callbacks=[stop_at(deadline)])
        if model.get_params()["early_stopping_rounds"] is None:
            return self.fit_model(model, x, y)
        held = np.random.default_rng(seed).random(len(x)) < 0.1
        return model.fit(x[~held], y[~held], eval_set=[(x[held], y[held])], verbose=False)

    def compile(self, model):
        return compile_xgboost(model)


def stop_at(deadline):
    """XGBoost's callback ending the rounds once `deadline` (kit/budget.py) has passed (imported here: the package
    is optional)."""
    from xgboost.callback import TrainingCallback

    class StopAt(TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            return deadline.passed()

    return StopAt()


XGBOOST_OBJECTIVES = ("binary:logistic", "multi:softprob", "reg:squarederror")


def _refuse_unsupported(learner: dict) -> None:
    """KitError for what the flat walk cannot reproduce: other objectives and boosters, multi-output trees and
    categorical splits."""
    objective = learner["objective"]["name"]
    if objective not in XGBOOST_OBJECTIVES:
        raise KitError(f"compile_xgboost takes the objectives {', '.join(XGBOOST_OBJECTIVES)}, got {objective!r}")
    if learner["gradient_booster"]["name"] != "gbtree":
        raise KitError(f"compile_xgboost takes tree boosters (gbtree), got {learner['gradient_booster']['name']!r}")
    for tree in learner["gradient_booster"]["model"]["trees"]:
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise KitError("the XGBoost model has multi-output trees (multi_strategy='multi_output_tree'), which "
                           "cannot be compiled: fit it with the default one_output_per_tree")
        if any(tree["split_type"]) or tree.get("categories_nodes"):
            raise KitError("the XGBoost model has categorical splits, which cannot be compiled; kit feeds numeric "
                           "features: fit it without enable_categorical")


def compile_xgboost(model):
    """A fitted XGBClassifier (binary:logistic or multi:softprob) or XGBRegressor (reg:squarederror) with tree
    boosters on numeric features as a TreeEnsemble whose output matches predict_proba (predict as [N, 1]) on
    NaN-free float32 rows (kit imputes features). Only the rounds XGBoost's own predict uses are compiled: up to
    best_iteration when early stopping ran. XGBoost sends a row left when `x < split_condition` in float32; the
    walk tests `x <= threshold`, so each threshold is the float32 just below the condition (the same test on
    float32 inputs). A leaf's value is its split_condition; tree_info names the class score each tree adds to, and
    base_score (a probability for binary:logistic, a margin otherwise; one per class for multi:softprob) becomes
    the baseline in margin space."""
    import torch

    from kit.trees import TreeEnsemble, tree_depths

    learner = xgboost_json(model)["learner"]
    _refuse_unsupported(learner)
    objective, params = learner["objective"]["name"], learner["learner_model_param"]
    k = max(int(params["num_class"]), 1)
    base = np.asarray([float(v) for v in params["base_score"].strip("[]").split(",")], dtype=np.float64)
    if objective == "binary:logistic":
        base = np.log(base) - np.log1p(-base)  # XGBoost keeps the probability; the margin is its logit
    baseline = np.broadcast_to(base, (k,)).copy()
    gbtree = learner["gradient_booster"]["model"]
    trees, tree_class = gbtree["trees"], np.asarray(gbtree["tree_info"], dtype=np.int64)
    sizes = [len(tree["left_children"]) for tree in trees]
    starts = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    offset = np.repeat(starts, sizes)
    own = np.arange(sum(sizes), dtype=np.int64)

    def column(key: str, dtype) -> np.ndarray:
        return np.concatenate([np.asarray(tree[key], dtype=dtype) for tree in trees]) if trees else np.zeros(0, dtype)

    left, right = column("left_children", np.int64), column("right_children", np.int64)
    condition = column("split_conditions", np.float32)
    leaf = left == -1
    below = np.nextafter(condition, np.float32(-np.inf)).astype(np.float64)  # x < c  <=>  x <= below (float32 x)
    left, right = np.where(leaf, own, left + offset), np.where(leaf, own, right + offset)
    return TreeEnsemble(
        feature=torch.from_numpy(np.where(leaf, 0, column("split_indices", np.int64))),
        threshold=torch.from_numpy(np.where(leaf, 0.0, below)),
        left=torch.from_numpy(left), right=torch.from_numpy(right),
        value=torch.from_numpy(np.where(leaf, condition.astype(np.float64), 0.0)),
        roots=torch.from_numpy(starts), class_map=torch.from_numpy(np.eye(k)[tree_class]),
        baseline=torch.from_numpy(baseline),
        depth=torch.tensor(int(tree_depths(left, right, starts).max(initial=0)), dtype=torch.int64),
        identity=torch.tensor(objective.startswith("reg:")))


def xgboost_json(model) -> dict:
    """A fitted XGBoost scikit-learn model's booster as its JSON dict (save_raw("json")), cut to best_iteration + 1
    rounds when early stopping ran (what the model's own predict uses), else whole."""
    import json

    try:
        booster = model.get_booster()
    except Exception:  # XGBoost's NotFittedError, or no get_booster at all
        raise KitError(f"compile_xgboost takes a fitted XGBoost model, got {type(model).__name__}") from None
    try:
        booster = booster[: booster.best_iteration + 1]
    except AttributeError:  # no early stopping: every round counts
        pass
    return json.loads(booster.save_raw("json"))

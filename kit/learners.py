"""The learners beside the network: scikit-learn models fitted on a fold's encoded features, then compiled into
torch modules (kit/trees.py), so that they are saved, blended and exported exactly like the network.

Why HistGradientBoosting for `gbdt`: it ships with scikit-learn (already a dependency: no new install, nothing
pins onnx), it is deterministic for a seed, fast on small tables, and its fitted trees are plain node arrays that
compile into a tensor program for TorchScript and ONNX. `catboost` (CatBoost's oblivious trees on the same
features) beat it beyond the noise by repeated CV on california-housing; LightGBM and XGBoost did not on any
development competition (docs/tables.md). `linear` is LogisticRegression for classes and RidgeCV for
values; on the automatic encoding it sees one-hot categories and de-skewed, standardised numbers with missing
indicators, the trees ordinal category codes instead (kit/encoding.py).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from kit import trees
from kit.config import Config
from kit.errors import KitError

PACKAGES = {("gbdt", False): ("sklearn.ensemble", "HistGradientBoostingClassifier"),
            ("gbdt", True): ("sklearn.ensemble", "HistGradientBoostingRegressor"),
            ("catboost", False): ("catboost", "CatBoostClassifier"),
            ("catboost", True): ("catboost", "CatBoostRegressor"),
            ("linear", False): ("sklearn.linear_model", "LogisticRegression"),
            ("linear", True): ("sklearn.linear_model", "RidgeCV")}
PIP = {"sklearn": "'scikit-learn>=1.3'", "catboost": "catboost"}  # what to install for a module's package
RIDGE_ALPHAS = np.logspace(-3, 4, 15)  # RidgeCV's candidates, chosen by leave-one-out on the fold


def check_available(names: list[str], regression: bool = False) -> None:
    """Refuse, before any run folder is written, a learner whose package cannot be imported."""
    for name in names:
        if (name, regression) in PACKAGES:
            _estimator(name, regression)


def _estimator(name: str, regression: bool) -> type:
    module, cls = PACKAGES[name, regression]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise KitError(f"learner {name!r} needs {module}.{cls}, which cannot be imported here ({exc}); install it "
                       f"with `pip install {PIP[module.split('.')[0]]}`, or drop {name} from learners") from None


SMALL = 20_000  # rows: below this, one thread fits faster than OpenMP's many (Titanic's fold: 1.7 s vs 31 s on 2
# busy cores, where idle OpenMP threads spin); larger tables use every core


EARLY_STOPPING_ROWS = 10_000  # gbdt.early_stopping=auto: on from this many training rows (scikit-learn's own rule)
SMALL_TABLE_ROUNDS = 1000  # CatBoost's default rounds, at the learning rate it picks for them and the rows


def estimator(name: str, config: Config, rows: int, seed: int):
    """The unfitted scikit-learn estimator of learner `name` for a fold of `rows` training rows."""
    regression = config.target.type == "regression"
    cls = _estimator(name, regression)
    if name == "gbdt":
        g = config.gbdt
        stop = rows >= EARLY_STOPPING_ROWS if g.early_stopping == "auto" else g.early_stopping
        return cls(learning_rate=g.learning_rate, max_iter=g.max_iter, max_leaf_nodes=g.max_leaf_nodes,
                   max_depth=g.max_depth or None, min_samples_leaf=g.min_samples_leaf,
                   l2_regularization=g.l2_regularization, early_stopping=stop, validation_fraction=0.1,
                   n_iter_no_change=20, random_state=seed)
    if name == "catboost":
        return _catboost(cls, config, rows, seed)
    if regression:
        return cls(alphas=RIDGE_ALPHAS)
    return cls(C=config.linear.C, max_iter=config.linear.max_iter)


def _catboost(cls: type, config: Config, rows: int, seed: int):
    """CatBoost with early stopping from EARLY_STOPPING_ROWS (see CatBoostConfig), else its small-table recipe."""
    c = config.catboost
    stop = rows >= EARLY_STOPPING_ROWS if c.early_stopping == "auto" else c.early_stopping
    common = dict(depth=c.depth, l2_leaf_reg=c.l2_leaf_reg, random_seed=seed, verbose=0, allow_writing_files=False,
                  thread_count=1 if rows < SMALL else -1)
    if len(config.classes) > 2 and config.target.type != "regression":
        common["loss_function"] = "MultiClass"
    if stop:
        return cls(iterations=c.max_iter, learning_rate=c.learning_rate, early_stopping_rounds=100,
                   use_best_model=True, **common)
    return cls(iterations=min(c.max_iter, SMALL_TABLE_ROUNDS), **common)


def fit_estimator(name: str, config: Config, x: np.ndarray, y: np.ndarray, seed: int):
    """The fitted estimator of learner `name` on `x` (float32, as encoded: each estimator converts what it needs,
    HGB and RidgeCV to float64, LogisticRegression solves in float32). CatBoost sees at most catboost.max_rows of
    the rows (a sample drawn by `seed`) and stops early on 10% of those; HGB holds out its own."""
    if name == "catboost" and 0 < config.catboost.max_rows < len(x):
        rows = np.sort(np.random.default_rng(seed).choice(len(x), config.catboost.max_rows, replace=False))
        x, y = x[rows], y[rows]
    model = estimator(name, config, len(x), seed)
    if name == "catboost" and model.get_param("use_best_model"):
        held = np.random.default_rng(seed).random(len(x)) < 0.1
        return model.fit(x[~held], y[~held], eval_set=(x[held], y[held]))
    with threadpool_limits(limits=1 if len(x) < SMALL else None):
        return model.fit(x, y)


COMPILERS = {"gbdt": trees.compile_hgb, "catboost": trees.compile_catboost, "linear": trees.compile_linear}


def fit_learner(name: str, config: Config, x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    """Fit learner `name` on encoded features `x` (float32) and targets `y` (class indices, or transform(y) values
    for regression); a module mapping x to probabilities [N, K] or values [N, 1]."""
    return COMPILERS[name](fit_estimator(name, config, x, y, seed))


def rebuild(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A fitted learner's module from its saved state_dict alone (no scikit-learn needed)."""
    return trees.from_state_dict(state)

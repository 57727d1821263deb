"""Fitted scikit-learn, CatBoost and XGBoost models as torch modules, so tabular fold models go through the same
TorchScript / ONNX export, parity check and serving path as the image models.

A HistGradientBoosting or XGBoost model, or a CatBoost model's oblivious trees, becomes a `TreeEnsemble`: every
tree's nodes packed into flat buffers, every (row, tree) pair walked from its root by a fixed number of gather /
where steps (no data-dependent control flow, so tracing and the TorchScript ONNX exporter see one static graph with a
dynamic batch axis). A LogisticRegression or Ridge becomes a `LinearModel`. Trees compare in float64, as
scikit-learn does, so no threshold test flips; linear models sum in float64. Both return float32 probabilities
[N, K] that match `predict_proba`. Everything lives in registered buffers, so a state_dict alone (what kit saves
per fold and loads with weights_only=True) rebuilds the module: see `from_state_dict`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kit.errors import KitError


def _probabilities(raw: torch.Tensor, binary: bool, identity: bool = False) -> torch.Tensor:
    """Raw scores [N, 1] (binary) or [N, K] to float32 probabilities [N, 2] or [N, K], as predict_proba links them:
    binary as [1 - sigmoid, sigmoid] (column 1 is classes_[1]), multiclass as a softmax; a regressor's scores
    (`identity`) are its values [N, 1]. `binary` and `identity` are Python bools fixed at construction: a shape
    test here would be a tensor-to-bool conversion under tracing."""
    if identity:
        return raw.float()
    if binary:
        p = torch.sigmoid(raw)
        return torch.cat([1 - p, p], dim=1).float()
    return torch.softmax(raw, dim=1).float()


GROUP = 256  # trees walked together: [rows, GROUP] node tensors stay in cache (otto, 3,105 trees: 3.2x vs all at once)


class TreeEnsemble(nn.Module):
    """Gradient-boosted trees as flat node buffers. Node i tests `x[feature[i]] <= threshold[i]` and moves to left[i]
    or right[i]; a leaf points to itself, so enough steps from the roots land every (row, tree) on its leaf whatever
    the tree's own depth. A leaf holds one value (value [nodes]) or one per class score (value [nodes, K], CatBoost's
    multiclass trees); class_map [T, K] sends each tree's value(s) to the class scores it adds to.

    The walk goes by groups of GROUP trees sorted by depth, each taking its deepest tree's number of steps: a
    boosted ensemble's trees are mostly shallower than its deepest (otto: mean depth 13 of 29), and a group's node
    tensors fit in cache. The groups are derived from the buffers, so the state_dict is unchanged."""

    BUFFERS = ("feature", "threshold", "left", "right", "value", "roots", "class_map", "baseline", "depth",
               "identity")

    def __init__(self, feature: torch.Tensor, threshold: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                 value: torch.Tensor, roots: torch.Tensor, class_map: torch.Tensor, baseline: torch.Tensor,
                 depth: torch.Tensor, identity: torch.Tensor | None = None):
        super().__init__()
        identity = torch.tensor(False) if identity is None else identity  # older checkpoints: classifiers
        for name, tensor in zip(self.BUFFERS, (feature, threshold, left, right, value, roots, class_map, baseline,
                                               depth, identity), strict=True):
            self.register_buffer(name, tensor)
        # Python values, so tracing unrolls the walk into a fixed sequence of the same few ops and picks the link once.
        self.binary, self.regressor, self.vector = baseline.numel() == 1, bool(identity), value.ndim == 2
        depths = tree_depths(left.numpy(), right.numpy(), roots.numpy())
        order = torch.from_numpy(np.argsort(depths, kind="stable"))
        self.groups = [(start, min(start + GROUP, len(order)), int(depths[order[min(start + GROUP, len(order)) - 1]]))
                       for start in range(0, len(order), GROUP)]  # (first, end, steps) in depth order
        self.register_buffer("child", torch.stack([left, right], 1).reshape(-1), persistent=False)
        self.register_buffer("sorted_roots", roots[order], persistent=False)
        self.register_buffer("sorted_class_map", class_map[order], persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TreeEnsemble:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state.get(name) for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float64 like scikit-learn's own prediction, so no threshold test flips on float32 rounding.
        x = x.to(torch.float64)
        raw = self.baseline.expand(x.shape[0], -1)
        for start, end, steps in self.groups:
            node = self.sorted_roots[start:end].expand(x.shape[0], -1)
            for _ in range(steps):  # child holds (left, right) pairs: node i goes to 2i (left) or 2i + 1
                go_right = torch.logical_not(x.gather(1, self.feature[node]) <= self.threshold[node])
                node = self.child[2 * node + go_right.long()]
            leaf, class_map = self.value[node], self.sorted_class_map[start:end]  # leaf [N, G] or [N, G, K]
            raw = raw + ((leaf * class_map).sum(1) if self.vector else leaf @ class_map)
        return _probabilities(raw, self.binary, self.regressor)


def tree_depths(left: np.ndarray, right: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """Each tree's depth (its longest root-to-leaf path; a leaf points to itself), level by level."""
    depths, frontier, owner, level = np.zeros(len(roots), np.int64), roots, np.arange(len(roots)), 0
    while len(frontier):
        inner = left[frontier] != frontier
        frontier, owner, level = frontier[inner], owner[inner], level + 1
        depths[owner] = level
        frontier, owner = np.concatenate([left[frontier], right[frontier]]), np.concatenate([owner, owner])
    return depths


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


def compile_hgb(model) -> TreeEnsemble:
    """A fitted HistGradientBoostingClassifier (binary or multiclass, numeric features) or squared-error
    HistGradientBoostingRegressor as a TreeEnsemble whose output matches model.predict_proba (model.predict as
    [N, 1]) on NaN-free float32 rows. Mirrors scikit-learn's _predict_from_raw_data:
    a numeric split sends `x <= num_threshold` left; missing_go_to_left is not needed since kit imputes features."""
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


def compile_catboost(model) -> TreeEnsemble:
    """A fitted CatBoostClassifier (Logloss or MultiClass) or CatBoostRegressor (RMSE) on numeric features as a
    TreeEnsemble whose output matches predict_proba (predict as [N, 1]) on NaN-free rows (kit imputes features).
    CatBoost's trees are oblivious: a depth-d tree applies one split per level, and its leaf index is
    sum_i (x[f_i] > border_i) << i over its splits in order. Each becomes a full binary tree testing split i at
    level i (left for x <= border, as the walk does); the model's scale goes into the leaf values and its bias into
    the baseline."""
    spec = catboost_json(model)
    scale, bias = spec["scale_and_bias"]
    flat = [f["flat_feature_index"] for f in spec["features_info"].get("float_features", [])]
    k = len(bias)
    parts, starts, start = [], [], 0
    for tree in spec["oblivious_trees"]:
        splits = tree.get("splits") or []
        if any(split["split_type"] != "FloatFeature" for split in splits):
            raise KitError("the CatBoost model has categorical or combined splits, which cannot be compiled; kit "
                           "feeds numeric features: fit it without cat_features")
        values = scale * np.asarray(tree["leaf_values"], dtype=np.float64).reshape(-1, k)
        parts.append(_oblivious_nodes([flat[s["float_feature_index"]] for s in splits],
                                      [s["border"] for s in splits], values, start))
        starts.append(start)
        start += len(parts[-1][0])
    feature, threshold, left, right, value = (np.concatenate(column) for column in zip(*parts, strict=True))
    depth = max((len(t.get("splits") or []) for t in spec["oblivious_trees"]), default=0)
    return TreeEnsemble(
        feature=torch.from_numpy(feature), threshold=torch.from_numpy(threshold), left=torch.from_numpy(left),
        right=torch.from_numpy(right), value=torch.from_numpy(value[:, 0].copy() if k == 1 else value),
        roots=torch.tensor(starts, dtype=torch.int64), class_map=torch.ones(len(starts), k, dtype=torch.float64),
        baseline=torch.tensor(bias, dtype=torch.float64), depth=torch.tensor(depth, dtype=torch.int64),
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


XGBOOST_OBJECTIVES = ("binary:logistic", "multi:softprob", "reg:squarederror")


def compile_xgboost(model) -> TreeEnsemble:
    """A fitted XGBClassifier (binary:logistic or multi:softprob) or XGBRegressor (reg:squarederror) with tree
    boosters on numeric features as a TreeEnsemble whose output matches predict_proba (predict as [N, 1]) on
    NaN-free float32 rows (kit imputes features). Only the rounds XGBoost's own predict uses are compiled: up to
    best_iteration when early stopping ran. XGBoost sends a row left when `x < split_condition` in float32; the
    walk tests `x <= threshold`, so each threshold is the float32 just below the condition (the same test on
    float32 inputs). A leaf's value is its split_condition; tree_info names the class score each tree adds to, and
    base_score (a probability for binary:logistic, a margin otherwise; one per class for multi:softprob) becomes
    the baseline in margin space."""
    spec = xgboost_json(model)
    learner = spec["learner"]
    objective = learner["objective"]["name"]
    if objective not in XGBOOST_OBJECTIVES:
        raise KitError(f"compile_xgboost takes the objectives {', '.join(XGBOOST_OBJECTIVES)}, got {objective!r}")
    if learner["gradient_booster"]["name"] != "gbtree":
        raise KitError(f"compile_xgboost takes tree boosters (gbtree), got {learner['gradient_booster']['name']!r}")
    params = learner["learner_model_param"]
    k = max(int(params["num_class"]), 1)
    base = np.asarray([float(v) for v in params["base_score"].strip("[]").split(",")], dtype=np.float64)
    if objective == "binary:logistic":
        base = np.log(base) - np.log1p(-base)  # XGBoost keeps the probability; the margin is its logit
    baseline = np.broadcast_to(base, (k,)).copy()
    gbtree = learner["gradient_booster"]["model"]
    trees, tree_class = gbtree["trees"], np.asarray(gbtree["tree_info"], dtype=np.int64)
    for tree in trees:
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise KitError("the XGBoost model has multi-output trees (multi_strategy='multi_output_tree'), which "
                           "cannot be compiled: fit it with the default one_output_per_tree")
        if any(tree["split_type"]) or tree.get("categories_nodes"):
            raise KitError("the XGBoost model has categorical splits, which cannot be compiled; kit feeds numeric "
                           "features: fit it without enable_categorical")
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


def _oblivious_nodes(features: list[int], borders: list[float], values: np.ndarray, start: int) -> tuple:
    """One oblivious tree (split i on level i; values [2^d, K] by CatBoost's leaf index) as flat nodes in heap
    order from `start`: node h's children are 2h + 1 (x <= border) and 2h + 2; leaf h = 2^d - 1 + p is reached by
    the bits of p read from the root down, which CatBoost's index reads from bit 0 up: index = reverse(p)."""
    d = len(features)
    h = np.arange(2 ** (d + 1) - 1)
    inner = h < 2**d - 1
    level = np.floor(np.log2(h + 1)).astype(np.int64)
    p = np.where(inner, 0, h - (2**d - 1))
    index = sum(((p >> (d - 1 - i)) & 1) << i for i in range(d)) if d else p
    return (np.where(inner, np.asarray(features + [0], dtype=np.int64)[np.minimum(level, d)], 0),
            np.where(inner, np.asarray(borders + [0.0], dtype=np.float64)[np.minimum(level, d)], 0.0),
            np.where(inner, 2 * h + 1, h) + start, np.where(inner, 2 * h + 2, h) + start,
            np.where(inner[:, None], 0.0, values[index]))


class LinearModel(nn.Module):
    """A linear model as weight [K, F] and bias [K] buffers, summed in float64 (scikit-learn's own
    decision_function sums in the dtype it was fitted in, float32 inside kit):
    logistic regression (K = 1 for binary) linked to probabilities, or ridge regression's values (`identity`)."""

    BUFFERS = ("weight", "bias", "identity")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, identity: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("identity", torch.tensor(False) if identity is None else identity)
        self.binary, self.regressor = bias.numel() == 1, bool(self.identity)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> LinearModel:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state.get(name) for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _probabilities(x.to(torch.float64) @ self.weight.t() + self.bias, self.binary, self.regressor)


def compile_linear(model) -> LinearModel:
    """A fitted LogisticRegression or Ridge/RidgeCV as a LinearModel whose output matches model.predict_proba
    (binary: [1 - sigmoid, sigmoid] of the one score; multiclass: the softmax of the K scores) or model.predict
    as [N, 1]."""
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV

    if not isinstance(model, (LogisticRegression, Ridge, RidgeCV)) or not hasattr(model, "coef_"):
        raise KitError(f"compile_linear takes a fitted LogisticRegression or Ridge, got {type(model).__name__}")
    regressor = not isinstance(model, LogisticRegression)
    weight = np.asarray(model.coef_, dtype=np.float64).reshape(1 if regressor else -1, model.coef_.shape[-1])
    return LinearModel(weight=torch.from_numpy(weight.copy()),
                       bias=torch.from_numpy(np.asarray(model.intercept_, dtype=np.float64).reshape(-1).copy()),
                       identity=torch.tensor(regressor))


def from_state_dict(state: dict[str, torch.Tensor]) -> TreeEnsemble | LinearModel:
    """Whichever compiled model a saved state_dict holds, told apart by its buffer names, so a fold loader needs
    nothing but the file."""
    for cls in (TreeEnsemble, LinearModel):
        if set(cls.BUFFERS) - {"identity"} <= set(state) <= set(cls.BUFFERS):
            return cls.from_state_dict(state)
    raise KitError(f"not a compiled tree ensemble or logistic regression state_dict (keys {sorted(state)})")

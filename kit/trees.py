"""Fitted scikit-learn classifiers as torch modules, so tabular fold models go through the same TorchScript / ONNX
export, parity check and serving path as the image models.

A HistGradientBoostingClassifier becomes a `TreeEnsemble`: every tree's nodes packed into flat buffers, every
(row, tree) pair walked from its root by a fixed number of gather / where steps (no data-dependent control flow,
so tracing and the TorchScript ONNX exporter see one static graph with a dynamic batch axis). A LogisticRegression
becomes a `LogisticModel`. Both compare and sum in float64, as scikit-learn does, and return float32 probabilities
[N, K] that match `predict_proba`. Everything lives in registered buffers, so a state_dict alone (what kit saves per
fold and loads with weights_only=True) rebuilds the module: see `from_state_dict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kit.errors import KitError

if TYPE_CHECKING:  # scikit-learn is needed to compile a model, not to load or run a compiled one
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression


def _probabilities(raw: torch.Tensor, binary: bool) -> torch.Tensor:
    """Raw scores [N, 1] (binary) or [N, K] to float32 probabilities [N, 2] or [N, K], as predict_proba links them:
    binary as [1 - sigmoid, sigmoid] (column 1 is classes_[1]), multiclass as a softmax. `binary` is a Python bool
    fixed at construction: a shape test here would be a tensor-to-bool conversion under tracing."""
    if binary:
        p = torch.sigmoid(raw)
        return torch.cat([1 - p, p], dim=1).float()
    return torch.softmax(raw, dim=1).float()


class TreeEnsemble(nn.Module):
    """Gradient-boosted trees as flat node buffers. Node i tests `x[feature[i]] <= threshold[i]` and moves to left[i]
    or right[i]; a leaf points to itself, so `depth` steps from the roots land every (row, tree) on its leaf whatever
    the tree's own depth. class_map [T, K] one-hot sends each tree's leaf value to the class score it adds to."""

    BUFFERS = ("feature", "threshold", "left", "right", "value", "roots", "class_map", "baseline", "depth")

    def __init__(self, feature: torch.Tensor, threshold: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                 value: torch.Tensor, roots: torch.Tensor, class_map: torch.Tensor, baseline: torch.Tensor,
                 depth: torch.Tensor):
        super().__init__()
        for name, tensor in zip(self.BUFFERS, (feature, threshold, left, right, value, roots, class_map, baseline,
                                               depth), strict=True):
            self.register_buffer(name, tensor)
        # Python values, so tracing unrolls the walk into `steps` copies of the same few ops and picks the link once.
        self.steps, self.binary = int(depth), baseline.numel() == 1

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TreeEnsemble:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state[name] for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float64 like scikit-learn's own prediction, so no threshold test flips on float32 rounding.
        x = x.to(torch.float64)
        node = self.roots.expand(x.shape[0], -1)
        for _ in range(self.steps):
            go_left = x.gather(1, self.feature[node]) <= self.threshold[node]
            node = torch.where(go_left, self.left[node], self.right[node])
        return _probabilities(self.value[node] @ self.class_map + self.baseline, self.binary)


def _refuse_unsupported(model: HistGradientBoostingClassifier) -> None:
    """KitError for what the flat walk cannot reproduce. Categorical splits test category sets, not thresholds, and
    a model fit with categorical features ordinal-encodes and reorders its columns before its trees see them (every
    categorical split is on such a feature), so such a model is refused whole: kit feeds numeric features."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if not isinstance(model, HistGradientBoostingClassifier):
        raise KitError(f"compile_hgb takes a HistGradientBoostingClassifier, got {type(model).__name__}")
    if not hasattr(model, "_predictors"):
        raise KitError("the HistGradientBoostingClassifier is not fitted; fit it before compiling it")
    if model.is_categorical_ is not None:
        columns = np.flatnonzero(model.is_categorical_).tolist()
        raise KitError(f"the HistGradientBoostingClassifier was fit with categorical features (columns {columns}), "
                       "whose categorical splits cannot be compiled; kit feeds numeric features: refit it with "
                       "categorical_features=None")


def compile_hgb(model: HistGradientBoostingClassifier) -> TreeEnsemble:
    """A fitted HistGradientBoostingClassifier (binary or multiclass, numeric features) as a TreeEnsemble whose
    output matches model.predict_proba on NaN-free float32 rows. Mirrors scikit-learn's _predict_from_raw_data:
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
    )


class LogisticModel(nn.Module):
    """Logistic regression as weight [K, F] and bias [K] buffers (K = 1 for binary), in float64 like scikit-learn's
    decision_function."""

    BUFFERS = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.binary = bias.numel() == 1

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> LogisticModel:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state[name] for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _probabilities(x.to(torch.float64) @ self.weight.t() + self.bias, self.binary)


def compile_logreg(model: LogisticRegression) -> LogisticModel:
    """A fitted LogisticRegression as a LogisticModel whose output matches model.predict_proba: binary is
    [1 - sigmoid, sigmoid] of the one score, multiclass the softmax of the K scores (scikit-learn's multinomial)."""
    from sklearn.linear_model import LogisticRegression

    if not isinstance(model, LogisticRegression) or not hasattr(model, "coef_"):
        raise KitError(f"compile_logreg takes a fitted LogisticRegression, got {type(model).__name__}")
    return LogisticModel(weight=torch.from_numpy(np.asarray(model.coef_, dtype=np.float64).copy()),
                         bias=torch.from_numpy(np.asarray(model.intercept_, dtype=np.float64).reshape(-1).copy()))


def from_state_dict(state: dict[str, torch.Tensor]) -> TreeEnsemble | LogisticModel:
    """Whichever compiled model a saved state_dict holds, told apart by its buffer names, so a fold loader needs
    nothing but the file."""
    for cls in (TreeEnsemble, LogisticModel):
        if set(state) == set(cls.BUFFERS):
            return cls.from_state_dict(state)
    raise KitError(f"not a compiled tree ensemble or logistic regression state_dict (keys {sorted(state)})")

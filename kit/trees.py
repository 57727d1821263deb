"""The torch modules fitted tables models compile into, so tabular fold models go through the same TorchScript /
ONNX export, parity check and serving path as the image models. Each learner compiles its own library's model
(kit/learners/<name>.py: compile_hgb, compile_catboost, compile_xgboost, compile_linear).

Gradient-boosted trees become a `TreeEnsemble`: every tree's nodes packed into flat buffers, every (row, tree) pair
walked from its root by a fixed number of gather / where steps (no data-dependent control flow, so tracing and the
TorchScript ONNX exporter see one static graph with a dynamic batch axis). A LogisticRegression or Ridge becomes a
`LinearModel`. Trees compare in float64, as scikit-learn does, so no threshold test flips; linear models sum in
float64. Both return float32 probabilities [N, K] that match `predict_proba`. Everything lives in registered
buffers, so a state_dict alone (what kit saves per fold and loads with weights_only=True) rebuilds the module: see
`from_state_dict`.
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


def from_state_dict(state: dict[str, torch.Tensor]) -> TreeEnsemble | LinearModel:
    """Whichever compiled model a saved state_dict holds, told apart by its buffer names, so a fold loader needs
    nothing but the file."""
    for cls in (TreeEnsemble, LinearModel):
        if set(cls.BUFFERS) - {"identity"} <= set(state) <= set(cls.BUFFERS):
            return cls.from_state_dict(state)
    raise KitError(f"not a compiled tree ensemble or logistic regression state_dict (keys {sorted(state)})")

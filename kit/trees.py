"""The torch modules fitted tables models compile into, so tabular fold models go through the same TorchScript /
ONNX export, parity check and serving path as the image models. Each learner compiles its own library's model
(kit/learners/<name>.py: compile_hgb, compile_catboost, compile_xgboost, compile_linear).

Gradient-boosted trees become a `TreeEnsemble`: every tree's nodes packed into flat buffers, every (row, tree) pair
walked from its root by a fixed number of gather / where steps (no data-dependent control flow, so tracing and the
TorchScript ONNX exporter see one static graph with a dynamic batch axis); CatBoost's oblivious trees become
`ObliviousTrees`, whose leaf is computed level by level for many trees at once. A LogisticRegression or Ridge becomes
a `LinearModel`. Trees take float32 rows (kit's encoded features) and test each against its threshold rounded down
to float32, which sends every float32 value where the float64 threshold does (`float32_at_most`), so no threshold
test flips; linear models sum in float64. Both return float32 probabilities [N, K] that match `predict_proba`.
Everything lives in registered buffers, so a state_dict alone (what kit saves per fold and loads with
weights_only=True) rebuilds the module: see `from_state_dict`.
"""

from __future__ import annotations

import math

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


def float32_at_most(threshold: torch.Tensor) -> torch.Tensor:
    """The largest float32 not above each float64 threshold: for a float32 x, `x <= t` exactly when
    `x <= float32_at_most(t)` (and `x > t` when `x > ...`), so a float32 test sends every row where the float64 one
    would, with half the bytes gathered per test."""
    below = threshold.to(torch.float32)
    return torch.where(below.double() > threshold, torch.nextafter(below, torch.tensor(-math.inf)), below)


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
        self.register_buffer("threshold32", float32_at_most(threshold), persistent=False)
        self.register_buffer("sorted_roots", roots[order], persistent=False)
        self.register_buffer("sorted_class_map", class_map[order], persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TreeEnsemble:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state.get(name) for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)  # tested against threshold32: as scikit-learn's float64 test (float32_at_most)
        raw = self.baseline.expand(x.shape[0], -1)
        for start, end, steps in self.groups:
            node = self.sorted_roots[start:end].expand(x.shape[0], -1)
            for _ in range(steps):  # child holds (left, right) pairs: node i goes to 2i (left) or 2i + 1
                go_right = torch.logical_not(x.gather(1, self.feature[node]) <= self.threshold32[node])
                node = self.child[2 * node + go_right.long()]
            leaf, class_map = self.value[node], self.sorted_class_map[start:end]  # leaf [N, G] or [N, G, K]
            raw = raw + ((leaf * class_map).sum(1) if self.vector else leaf @ class_map)
        return _probabilities(raw, self.binary, self.regressor)


OBLIVIOUS_GROUP = 256  # trees tested together: [256 x depth, rows] comparisons per step


class ObliviousTrees(nn.Module):
    """Oblivious trees (CatBoost's): a tree of depth d tests one (feature, border) per level, whatever the node, so a
    row's leaf is sum_i (x[feature_i] > border_i) << i. For a group of trees at once that is one gather of feature
    rows (x transposed: each a contiguous copy), one comparison, d shifted adds and one leaf gather, instead of the
    general walk's node-by-node gathers (TreeEnsemble); 3-4x faster on 1,000 depth-6 trees.

    feature, border [T, D]: a tree shallower than D is padded with levels that never go right (border +inf; features
    are imputed, never NaN); its leaves past 2^d are unused. value [T, 2^D] or [T, 2^D, K] (vector leaves,
    multiclass). Rows come as float32, as CatBoost compares them; borders as `float32_at_most`."""

    BUFFERS = ("feature", "border", "value", "baseline", "identity")

    def __init__(self, feature: torch.Tensor, border: torch.Tensor, value: torch.Tensor, baseline: torch.Tensor,
                 identity: torch.Tensor | None = None):
        super().__init__()
        identity = torch.tensor(False) if identity is None else identity
        for name, tensor in zip(self.BUFFERS, (feature, border, value, baseline, identity), strict=True):
            self.register_buffer(name, tensor)
        self.binary, self.regressor, self.vector = baseline.numel() == 1, bool(identity), value.ndim == 3
        trees, self.depth = feature.shape
        self.groups = [(start, min(start + OBLIVIOUS_GROUP, trees)) for start in range(0, trees, OBLIVIOUS_GROUP)]
        self.register_buffer("border32", float32_at_most(border), persistent=False)
        self.register_buffer("offsets", torch.arange(trees, dtype=torch.int64)[:, None] * value.shape[1],
                             persistent=False)
        self.register_buffer("flat_value", value.reshape(trees * value.shape[1], -1).squeeze(1), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ObliviousTrees:
        """The module back from its state_dict alone: the buffers are the whole model."""
        return cls(*(state.get(name) for name in cls.BUFFERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = x.to(torch.float32).t().contiguous()  # [F, N]
        raw = self.baseline.expand(x.shape[0], -1)
        for start, end in self.groups:
            tested = columns.index_select(0, self.feature[start:end].reshape(-1))
            right = (tested > self.border32[start:end].reshape(-1, 1)).view(end - start, self.depth, -1)
            leaf = self.offsets[start:end]  # [G, 1], then [G, N]: each tree's leaf in flat_value
            for level in range(self.depth):
                leaf = leaf + right[:, level] * (1 << level)
            value = self.flat_value[leaf].sum(0)  # [N] or [N, K]
            raw = raw + (value if self.vector else value[:, None])
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


def from_state_dict(state: dict[str, torch.Tensor]) -> TreeEnsemble | ObliviousTrees | LinearModel:
    """Whichever compiled model a saved state_dict holds, told apart by its buffer names, so a fold loader needs
    nothing but the file."""
    for cls in (TreeEnsemble, ObliviousTrees, LinearModel):
        if set(cls.BUFFERS) - {"identity"} <= set(state) <= set(cls.BUFFERS):
            return cls.from_state_dict(state)
    raise KitError(f"not a compiled tree ensemble or logistic regression state_dict (keys {sorted(state)})")

"""The metric registry: a competition's metric by name, with its direction, what it scores and what learners train
on. The formulas are scikit-learn's; this module only says how to call them on kit's predictions.

kit's predictions are one array per row set: class probabilities [N, K] for binary and multiclass targets, per-tag
probabilities [N, K] for multilabel ones (whose truth is [N, K] 0/1), values [N, 1] for regression. `Metric.score` turns
them into what the metric consumes (labels, probabilities or values).
A competition may bring its own metric as a Python file in its folder (`metric: my_metric.py`), which defines
`score(y_true, y_pred)`, `GREATER_IS_BETTER` and `NEEDS` ("label", "proba" or "value").
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from kit.errors import KitError

EPS = 1e-15  # log loss clips probabilities to [EPS, 1 - EPS], as Kaggle does


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (y_true, what `needs` says) -> score
    greater_is_better: bool
    needs: str  # "label": class indices; "proba": probabilities; "value": regression values
    tuned_threshold: bool = False  # binary: the decision threshold is chosen on OOF rows (F1, MCC)
    two_classes: bool = False  # scores binary targets only
    multilabel: bool = False  # scores tags too: [N, K] 0/1 truth against [N, K] probabilities or 0/1 tags
    multilabel_only: bool = False  # ... and nothing else
    ordinal: bool = False  # scores ordered classes: an ordinal target answers it from a value and cut points
    transform: str = "none"  # what regression learners fit for it: log1p(y) for RMSLE (AutoGluon's choice too)
    target: Any = None  # the Target (kit/target/) whose predictions it scores: get_metric binds it

    @property
    def sign(self) -> float:
        """+1 when greater is better: `sign * (b - a)` is b's gain over a, whatever the direction."""
        return 1.0 if self.greater_is_better else -1.0

    @property
    def surrogate(self) -> str:
        """What the learners minimise for it: log loss for classes, squared error for values."""
        return "squared_error" if self.needs == "value" else "log_loss"

    def describe(self) -> dict:
        return {"name": self.name, "greater_is_better": self.greater_is_better, "needs": self.needs,
                "surrogate": self.surrogate}

    def score(self, y: np.ndarray, pred: np.ndarray, threshold: float | None = None) -> float:
        """The metric of predictions `pred` ([N, K] probabilities or [N, 1] values) against truth `y`."""
        return float(self.fn(y, self.consumed(pred, threshold)))

    def consumed(self, pred: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """`pred` as the metric takes it (labels, probabilities or values), as its target turns them."""
        return self.target.consumed(self.needs, pred, threshold)

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` beats `b`."""
        return self.sign * (a - b) > 0


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Classes: the mean -log p(true class). Tags: the mean over tags of each tag's binary log loss."""
    if y.ndim == 2:
        p = np.clip(p, EPS, 1 - EPS)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    p = p if p.ndim == 2 else np.stack([1 - p, p], axis=1)
    p = np.clip(p / p.sum(1, keepdims=True), EPS, 1 - EPS)  # Kaggle normalises rows, then clips
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    if p.ndim == 1:
        return skm.roc_auc_score(y, p)
    return skm.roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr", labels=np.arange(p.shape[1]))


def _mean_roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The mean over class columns of each column's ROC AUC against "is this class" (Kaggle's mean column-wise AUC,
    Plant Pathology's), over the classes present in `y`; binary: the positive class's AUC."""
    if p.ndim == 1:
        return skm.roc_auc_score(y, p)
    hot = y > 0.5 if y.ndim == 2 else y[:, None] == np.arange(p.shape[1])
    present = [k for k in range(p.shape[1]) if 0 < hot[:, k].sum() < len(y)]
    return float(np.mean([skm.roc_auc_score(hot[:, k], p[:, k]) for k in present]))


def _fbeta_samples(beta: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """Mean over rows of each row's F-beta of its predicted tags against its true tags (Planet's F2); a row with
    neither scores 1."""
    return lambda y, tags: skm.fbeta_score(y.astype(np.int64), tags, beta=beta, average="samples", zero_division=1.0)


def _rmsle(y: np.ndarray, v: np.ndarray) -> float:
    return float(np.sqrt(skm.mean_squared_log_error(y, np.clip(v, 0, None))))  # a negative guess counts as 0


F1_MACRO = Metric("f1_macro", lambda y, p: skm.f1_score(y.astype(np.int64), p, average="macro"), True, "label",
                  multilabel=True)  # the mean over classes (or tags) of each one's F1
REGISTRY: dict[str, Metric] = {m.name: m for m in [
    Metric("accuracy", skm.accuracy_score, True, "label"),
    Metric("balanced_accuracy", skm.balanced_accuracy_score, True, "label"),
    Metric("roc_auc", _roc_auc, True, "proba"),
    Metric("mean_roc_auc", _mean_roc_auc, True, "proba", multilabel=True),
    Metric("log_loss", _log_loss, False, "proba", multilabel=True),
    Metric("f1", lambda y, p: skm.f1_score(y, p), True, "label", tuned_threshold=True, two_classes=True),
    F1_MACRO,
    replace(F1_MACRO, name="macro_f1"),  # its earlier name
    Metric("fbeta_samples", _fbeta_samples(2.0), True, "label", multilabel=True, multilabel_only=True),
    Metric("f1_samples", _fbeta_samples(1.0), True, "label", multilabel=True, multilabel_only=True),
    Metric("mcc", skm.matthews_corrcoef, True, "label", tuned_threshold=True),
    Metric("qwk", lambda y, p: skm.cohen_kappa_score(y, p, weights="quadratic"), True, "label", ordinal=True),
    Metric("rmse", lambda y, v: float(np.sqrt(skm.mean_squared_error(y, v))), False, "value"),
    Metric("rmsle", _rmsle, False, "value", transform="log1p"),
    Metric("mae", skm.mean_absolute_error, False, "value"),
    Metric("r2", skm.r2_score, True, "value"),
]}


def get_metric(name: str, target=None, folder: Path | None = None) -> Metric:
    """Metric `name` (a registry name, or a .py file in the competition `folder`), bound to `target` (a Target, or
    a kind's name) after checking that it can score it; None: unbound, unchecked."""
    from kit.target import Target, fitting, target_class

    metric = _custom(folder / name, name) if name.endswith(".py") and folder is not None else \
        REGISTRY.get(name) or _with_beta(name)
    if metric is None:
        raise KitError(f"unknown metric {name!r}; known metrics: {', '.join(REGISTRY)}, fbeta_samples:<beta> (or "
                       "a .py file in the competition folder defining score(y_true, y_pred), GREATER_IS_BETTER and "
                       "NEEDS)")
    if target is None:
        return metric
    target = target if isinstance(target, Target) else target_class(target)()
    if not target.accepts(metric):
        raise KitError(f"metric {name!r} cannot score a {target.name} target; metrics that fit: "
                       f"{', '.join(fitting(type(target)))}")
    return replace(metric, target=target)


def _with_beta(name: str) -> Metric | None:
    """`fbeta_samples:<beta>`: F-beta over samples with another beta than fbeta_samples' 2."""
    prefix, _, beta = name.partition(":")
    try:
        value = float(beta)
    except ValueError:
        return None
    if prefix != "fbeta_samples" or not value > 0:
        return None
    return replace(REGISTRY[prefix], name=name, fn=_fbeta_samples(value))


def _custom(path: Path, name: str) -> Metric:
    """A competition's own metric file (executed, like features.py: it is the competition's own code)."""
    if not path.is_file():
        raise KitError(f"metric file not found: {path}; put it in the competition folder or name a known metric")
    spec = importlib.util.spec_from_file_location(f"kit_metric_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    needs = getattr(module, "NEEDS", None)
    if not callable(getattr(module, "score", None)) or needs not in ("label", "proba", "value") \
            or not isinstance(getattr(module, "GREATER_IS_BETTER", None), bool):
        raise KitError(f"{path} must define score(y_true, y_pred), GREATER_IS_BETTER = True/False and "
                       "NEEDS = 'label', 'proba' or 'value'")
    return Metric(name, module.score, module.GREATER_IS_BETTER, needs)


def metric_of(config) -> Metric:
    """A resolved config's metric, bound to its target."""
    from kit.target import get_target

    return get_metric(config.metric, get_target(config), config.root)

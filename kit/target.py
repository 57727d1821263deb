"""The target: its type and classes settled from the training labels, and the fitted transform of regression values.

numpy and pandas only (kit.runtime reads the transform from meta.json).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from kit.errors import KitError

log = logging.getLogger(__name__)

MAX_CLASSES_OF_NUMBERS = 20  # integer labels with at most this many values are classes, more are a regression


def infer_type(values: pd.Series) -> tuple[str, str]:
    """(target type, the rule that decided it) from the training labels (text, as read)."""
    seen = values.dropna()
    distinct = seen.nunique()
    numbers = pd.to_numeric(seen, errors="coerce")
    if distinct == 2:
        return "binary", "two distinct values"
    if numbers.isna().any():
        return "multiclass", f"{distinct} distinct text values"
    whole = bool((numbers == numbers.round()).all())
    if whole and distinct <= MAX_CLASSES_OF_NUMBERS:
        return "multiclass", f"{distinct} distinct whole numbers (at most {MAX_CLASSES_OF_NUMBERS} are classes)"
    return "regression", f"numbers with {distinct} distinct values"


def sorted_labels(values: pd.Series) -> list[str]:
    """Distinct labels in order: numerically when they are all numbers (so 2 comes before 10), else as text."""
    distinct = pd.Series(values.dropna().astype(str).unique())
    numbers = pd.to_numeric(distinct, errors="coerce")
    order = np.lexsort((distinct.to_numpy(), numbers.to_numpy())) if numbers.notna().all() else np.argsort(
        distinct.to_numpy(), kind="stable")
    return distinct.to_numpy()[order].tolist()


def resolve(config, labels: pd.Series):
    """The config with target.type, classes and target.transform settled from the training labels, and the metric
    checked against the type: what a run records, so predict, export and serving need no data to know them."""
    from kit.metrics import get_metric

    kind, rule = (config.target.type, "set in the config") if config.target.type != "auto" else infer_type(labels)
    classes = list(config.classes)
    if kind != "regression" and not classes:
        classes = sorted_labels(labels)
    if kind == "binary" and len(classes) != 2:
        raise KitError(f"target {config.target.column!r} is binary but holds {len(classes)} values {classes[:5]}; "
                       "set target.type to multiclass")
    metric = get_metric(config.metric, kind, config.root)
    transform = config.target.transform
    if transform == "auto":
        transform = "log1p" if kind == "regression" and metric.name == "rmsle" else "none"
    log.info("target %r: %s (%s), metric %s%s%s", config.target.column, kind, rule, metric.name,
             f", classes {classes}" + (f" (positive: {classes[-1]!r})" if kind == "binary" else "") if classes
             else "", f", learners fit {transform}(y)" if transform != "none" else "")
    target = dataclasses.replace(config.target, type=kind, transform=transform)
    return dataclasses.replace(config, target=target, classes=classes)


def forward(y: np.ndarray, transform: str) -> np.ndarray:
    """Regression values as the learners fit them."""
    if transform == "log1p":
        if (y < 0).any():
            raise KitError("target.transform log1p (the RMSLE target) needs target values of 0 or more; "
                           f"the smallest is {y.min():g}")
        return np.log1p(y)
    return y


def inverse(v: np.ndarray, transform: str) -> np.ndarray:
    """The learners' predictions back in the target's own units."""
    return np.expm1(v) if transform == "log1p" else v

"""The target: one class per kind, found in TARGETS (multilabel, binary, ordinal, multiclass, regression). Each owns
what differs by kind: how the kind is inferred from a label column, the fold strata, the network's loss and output link,
the fitted scale and transform and their inverse, what a metric and a submission get, and the export's output contract.
Code elsewhere asks the object (`get_target(config)`); it never compares a kind's name.

numpy and pandas at import; torch only inside the methods that build modules.
"""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd

from kit.errors import KitError
from kit.target.classes import Binary, Classes, Multiclass
from kit.target.kind import Labels, Target, read_labels, sorted_labels
from kit.target.tags import Multilabel
from kit.target.values import Ordinal, Regression

__all__ = ["Binary", "Classes", "Labels", "Multiclass", "Multilabel", "Ordinal", "Regression", "Target", "TARGETS",
           "fitting", "for_classes", "get_target", "infer", "learnable", "settle", "sorted_labels", "target_class"]

log = logging.getLogger(__name__)

TARGETS: dict[str, type[Target]] = {t.name: t for t in (Multilabel, Binary, Ordinal, Multiclass, Regression)}  # order


def target_class(name: str) -> type[Target]:
    """The kind registered as `name`."""
    if name not in TARGETS:
        raise KitError(f"unknown target type {name!r}; known types: {', '.join(TARGETS)}")
    return TARGETS[name]


def get_target(config) -> Target:
    """The resolved config's target (kind, classes, transform)."""
    return target_class(config.target.type)(config.classes, config.target.transform)


def for_classes(count: int) -> type[Target]:
    """The kind of a target given as a list of `count` class names (image folders)."""
    return Binary if count == 2 else Multiclass


def infer(values: pd.Series, metric=None, column: str = "target", kinds: list[type[Target]] | None = None
          ) -> tuple[type[Target], str]:
    """(kind, the rule that decided it) of a label column: the first kind in TARGETS (or `kinds`, those the learners
    fit) that can be scored by `metric` (any, when None) and whose rule claims the labels. `make new` and training
    use this one rule."""
    labels = read_labels(values)
    if labels.distinct < 2:
        raise KitError(f"target {column!r} has a single value ({values.dropna().iloc[0]!r}): nothing to learn")
    candidates = [t for t in kinds or TARGETS.values() if (t.accepts(metric) if metric else not t.metric_decides)]
    for kind in candidates:
        rule = kind.claims(labels)
        if rule:
            return kind, rule if metric is None or len(candidates) == len(TARGETS) else \
                f"{rule}; METRIC={metric.name} scores {' or '.join(t.name for t in candidates)}"
    others = [t.name for t in kinds or TARGETS.values() if t.claims(labels) and not t.metric_decides]
    raise KitError(f"metric {metric.name} scores {' or '.join(t.name for t in candidates)} targets, but {column!r} "
                   f"is {' or '.join(others)} ({labels.distinct} distinct values{', numbers' if labels.numeric else ''}"
                   f"); metrics that fit: {', '.join(fitting(*(TARGETS[o] for o in others)))}")


def learnable(learners: list[str]) -> list[type[Target]]:
    """The kinds that every learner in `learners` can fit (the network fits all; learners from libraries not tags)."""
    from kit.learners import get_learner

    library = any(get_learner(name).compiled for name in learners)
    return [kind for kind in TARGETS.values() if kind.library_learners or not library]


def fitting(*kinds: type[Target]) -> list[str]:
    """The metric registry's metrics that can score any of `kinds`."""
    from kit.metrics import REGISTRY

    return [name for name, m in REGISTRY.items() if any(k.accepts(m) for k in kinds)]


def settle(config, labels: pd.Series):
    """The config with target.type, classes and target.transform settled from the training labels, and the metric
    checked against the type: what a run records, so predict, export and serving need no data to know them."""
    from kit.metrics import get_metric

    metric, kinds = get_metric(config.metric, None, config.root), learnable(config.learners)
    if config.target.type != "auto":
        kind, rule = target_class(config.target.type), "set in the config"
        if kind not in kinds:
            raise KitError(f"a {kind.name} target is fitted by the network only, not by {config.learners}; set "
                           "learners: [net]")
    else:
        kind, rule = infer(labels, metric, config.target.column, kinds)
    classes = list(config.classes) or kind.classes_of(labels)
    target = kind(classes, "none")
    target.check_classes()
    metric = get_metric(config.metric, target, config.root)
    transform = config.target.transform
    if transform == "auto":
        transform = metric.transform
    log.info("target %r: %s (%s), metric %s%s%s", config.target.column, kind.name, rule, metric.name,
             f", classes {classes}" + (f" ({kind.note(classes)})" if kind.note(classes) else "") if classes
             else "", f", learners fit {transform}(y)" if transform != "none" else "")
    resolved = dataclasses.replace(config.target, type=kind.name, transform=transform)
    return dataclasses.replace(config, target=resolved, classes=classes)

"""Fold splits: stratified k folds (by the target kind's strata, optionally by group and repeated with new seeds),
forward-chaining folds on a time column, or the data's own validation split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from kit.config import Config
from kit.errors import KitError
from kit.target import get_target
from kit.tasks import Samples


def make_splits(config: Config, train: Samples) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every fold's (train_index, valid_index): k stratified folds per repeat (seeds cv.seed, cv.seed + 1, ...),
    repeat after repeat; or the data's own split with cv.folds=given."""
    cv = config.cv
    if cv.folds == "given":
        if train.is_valid is None or not train.is_valid.any():
            raise KitError("cv.folds=given needs data with its own validation split (an image folder with valid/)")
        return [(np.flatnonzero(~train.is_valid), np.flatnonzero(train.is_valid))]
    if cv.time:
        return time_folds(_column(train, cv.time, "cv.time"), cv.folds)
    groups = _column(train, cv.groups, "cv.groups").astype(str).to_numpy() if cv.groups else None
    y = get_target(config).strata(train.y)
    return [split for r in range(cv.repeats) for split in stratified_folds(y, cv.folds, cv.seed + r, groups)]


def stratified_folds(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_index, valid_index) pairs: disjoint validation parts covering every row once, stratified on `y`
    (class indices or bins, or [N, K] 0/1 tags); with `groups`, the rows of a group stay in one fold."""
    if folds < 2:
        raise KitError(f"cv.folds is {folds}; it must be at least 2")
    if y.ndim == 2:
        return multilabel_folds(y, folds, seed)
    if groups is not None:
        distinct = len(np.unique(groups))
        if distinct < folds:
            raise KitError(f"cv.folds={folds} needs at least {folds} groups, but cv.groups has {distinct}; "
                           "lower cv.folds")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    if smallest < folds:
        raise KitError(
            f"cv.folds={folds} needs at least {folds} samples of every class, but the smallest class has "
            f"{smallest}; lower cv.folds"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def multilabel_folds(tags: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011) of [N, K] 0/1 tags: the rarest tag's rows
    go first, each to the fold that most lacks that tag (then rows, then a seeded draw), so every tag is spread over
    the folds in proportion; rows without a tag fill the folds that most lack rows."""
    tags = np.asarray(tags, dtype=bool)
    rng = np.random.default_rng(seed)
    want_rows = np.full(folds, len(tags) / folds)
    want_tags = np.tile(tags.sum(0) / folds, (folds, 1)).astype(float)  # [folds, K]
    fold = np.full(len(tags), -1)
    left = rng.permutation(len(tags))
    while len(left):
        counts = tags[left].sum(0)
        if counts.any():
            k = int(np.argmin(np.where(counts > 0, counts, np.inf)))
            rows = left[tags[left, k]]
        else:
            k, rows = None, left
        for i in rows:
            need = want_tags[:, k] if k is not None else want_rows
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                best = best[want_rows[best] == want_rows[best].max()]
            f = int(rng.choice(best))
            fold[i] = f
            want_rows[f] -= 1
            want_tags[f] -= tags[i]
        left = left[fold[left] < 0]
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(folds)]


def time_folds(order: pd.Series, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward-chaining folds on a time column: the rows sorted by it make folds + 1 blocks, and fold k trains on
    blocks 0..k and validates on block k + 1 (the first block is never validated). Equal times share a block."""
    times = pd.to_numeric(order, errors="coerce")
    if times.isna().any():  # not numbers: dates or sortable text
        dates = pd.to_datetime(order, errors="coerce", format="mixed")
        times = dates.astype("int64") if dates.notna().all() else order.astype(str)
    ranks = times.rank(method="dense").to_numpy() - 1
    block = np.floor(ranks * (folds + 1) / (ranks.max() + 1)).astype(int)
    out = [(np.flatnonzero(block <= k), np.flatnonzero(block == k + 1)) for k in range(folds)]
    if any(len(v) == 0 for _, v in out):
        raise KitError(f"cv.time: the column has too few distinct times for {folds} folds; lower cv.folds")
    return out


def _column(train: Samples, name: str, key: str) -> pd.Series:
    """A column of the training table for the fold split (the raw or engineered data)."""
    if not hasattr(train.data, "columns") or name not in train.data.columns:
        raise KitError(f"{key} names column {name!r}, which the training data does not have")
    return train.data[name]


def folds_of(splits: list, rows: int, repeats: int) -> np.ndarray:
    """[repeats, rows]: the fold that validates each row in each repeat (-1: none, with cv.folds=given)."""
    fold_of = np.full((repeats, rows), -1, dtype=np.int64)
    per_repeat = len(splits) // repeats
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[fold // per_repeat, valid_idx] = fold
    return fold_of

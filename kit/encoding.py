"""Tabular feature encoding: fitted on a fold's training rows (`fit_encoding`), applied to any rows (`encode`).

numpy and pandas only, so that kit.runtime can encode raw rows on a machine without torch. A fitted encoding is
plain JSON (it goes into each fold's checkpoint and into the export's meta.json).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from kit.errors import KitError

log = logging.getLogger(__name__)


def fit_encoding(frame: pd.DataFrame, spec, y: np.ndarray, classes: int) -> dict:
    """Learn imputation values, scaling, frequency tables, group label tables and vocabularies from the fold's
    training rows `frame` (labels `y`) alone. `spec` is the config's features section."""
    _check_columns(frame, [*spec.numeric, *spec.categorical, *spec.impute_by.values(), *spec.counts.values(),
                           *spec.group_rates.values()])
    counts = {new: {"key": key, "table": _frequencies(frame[key])} for new, key in spec.counts.items()}
    rates = {new: _label_table(frame[key], y, classes) | {"key": key} for new, key in spec.group_rates.items()}
    frame = _add_counts(frame, counts)
    numeric = {}
    for column in [*spec.numeric, *spec.counts]:
        values = frame[column].astype(float)
        entry = {"median": _finite_or(values.median(), 0.0)}
        if column in spec.impute_by:
            group = spec.impute_by[column]
            medians = values.groupby(_keys(frame[group])).median().dropna()
            entry["by"] = group
            entry["group_medians"] = {k: float(v) for k, v in medians.items()}
        filled = _impute(frame, column, entry)
        entry["mean"] = float(filled.mean())
        entry["std"] = float(filled.std(ddof=0)) or 1.0
        numeric[column] = entry
    vocab = {c: sorted(_keys(frame[c]).unique().tolist()) for c in spec.categorical}
    return {"numeric": numeric, "categorical": vocab, "counts": counts, "group_rates": rates}


def encode(frame: pd.DataFrame, state: dict, own: np.ndarray | None = None) -> np.ndarray:
    """The float32 feature matrix for `frame` under a fitted encoding. `own`: the labels of these rows when they
    are the very rows the encoding was fitted on (training); each row's own label is then taken out of its group
    features, so that no row ever sees its own label."""
    parts = [_group_rates(frame, entry, own) for entry in state.get("group_rates", {}).values()]
    frame = _add_counts(frame, state["counts"])
    for column, entry in state["numeric"].items():
        parts.append(((_impute(frame, column, entry) - entry["mean"]) / entry["std"]).to_numpy()[:, None])
    for column, vocab in state["categorical"].items():
        values = _keys(frame[column]).to_numpy()
        parts.append((values[:, None] == np.asarray(vocab)[None, :]).astype(float))  # unseen -> all zeros
    return np.hstack(parts).astype(np.float32)


def encode_folds(frame: pd.DataFrame, states: list[dict]) -> np.ndarray:
    """The exported graph's input: every fold's encoding of `frame`, side by side."""
    return np.hstack([encode(frame, state) for state in states])


def feature_names(state: dict) -> list[str]:
    names = []
    for new, entry in state.get("group_rates", {}).items():
        names += [f"{new}={c}" for c in range(1, len(entry["prior"]))] + [f"{new}_known"]
    names += list(state["numeric"])
    for column, vocab in state["categorical"].items():
        names += [f"{column}={v}" for v in vocab]
    return names


def warn_unseen(frame: pd.DataFrame, states: list[dict]) -> None:
    """Name categorical values that no fold saw in training: they are encoded as unknown (all zeros)."""
    for column in states[0]["categorical"]:
        known = set().union(*(state["categorical"][column] for state in states))
        values = _keys(frame[column])
        unseen = sorted(set(values) - known)
        if unseen:
            log.warning("column %r holds value(s) never seen in training: %s (%d row(s)); encoded as unknown",
                        column, ", ".join(map(repr, unseen[:5])), int(values.isin(unseen).sum()))


def _label_table(keys: pd.Series, y: np.ndarray, classes: int) -> dict:
    """Per key value: how many training rows carry each label; and the fold's label shares (the prior)."""
    onehot = np.eye(classes, dtype=np.int64)[y]
    table = pd.DataFrame(onehot, index=_keys(keys).to_numpy()).groupby(level=0).sum()
    return {"table": {str(k): [int(v) for v in row] for k, row in zip(table.index, table.to_numpy(), strict=True)},
            "prior": (onehot.sum(0) / max(len(y), 1)).tolist()}


def _group_rates(frame: pd.DataFrame, entry: dict, own: np.ndarray | None) -> np.ndarray:
    """Label shares of the *other* training rows sharing the row's key (classes after the first), and how many
    such rows there are; with none, the fold's prior."""
    prior = np.asarray(entry["prior"])
    empty = [0] * len(prior)
    counts = np.array([entry["table"].get(k, empty) for k in _keys(frame[entry["key"]])], dtype=float)
    counts = counts.reshape(len(frame), len(prior))
    if own is not None:
        counts -= np.eye(len(prior))[own]  # this row's own label leaves its own features
    known = counts.sum(1, keepdims=True)
    shares = np.where(known > 0, counts / np.maximum(known, 1), prior)
    return np.hstack([shares[:, 1:], known])


def _impute(frame: pd.DataFrame, column: str, entry: dict) -> pd.Series:
    values = frame[column].astype(float)
    if "by" in entry:
        group = _keys(frame[entry["by"]]).map(entry["group_medians"])
        values = values.fillna(group)
    return values.fillna(entry["median"])


def _keys(values: pd.Series) -> pd.Series:
    """Category values as strings, a missing value as "" (its own category)."""
    return values.where(values.notna(), "").astype(str)


def _frequencies(keys: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in _keys(keys).value_counts().items()}


def _add_counts(frame: pd.DataFrame, counts: dict) -> pd.DataFrame:
    """Add frequency columns; a key never seen in the fitting rows still stands for one row: this one."""
    if not counts:
        return frame
    frame = frame.copy()
    for new, entry in counts.items():
        frame[new] = _keys(frame[entry["key"]]).map(entry["table"]).fillna(0).clip(lower=1).astype(float)
    return frame


def _check_columns(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = sorted({c for c in columns if c not in frame.columns})
    if missing:
        raise KitError(
            f"feature column(s) {missing} are neither in the data nor made by the feature code; "
            "fix the features section of the competition config"
        )


def _finite_or(value: float, default: float) -> float:
    return float(value) if np.isfinite(value) else default

"""Tabular feature encoding: fitted on a fold's training rows (`fit_encoding`), applied to any rows (`encode`).

numpy and pandas only, so that kit.runtime can encode raw rows on a machine without torch. A fitted encoding is
plain JSON (it goes into each fold's checkpoint and into the export's meta.json).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from kit.columns import as_text, numbers
from kit.errors import KitError

log = logging.getLogger(__name__)


def fit_encoding(frame: pd.DataFrame, spec, y: np.ndarray, classes: int) -> dict:
    """Learn imputation values, scaling, frequency tables, group label tables and vocabularies from the fold's
    training rows `frame` (labels `y`) alone. `spec` is the config's features section. A spec that lists no raw
    columns is the automatic encoding (`fit_auto`): every column's kind is inferred on these rows."""
    if not (spec.raw_numeric or spec.raw_text):
        return fit_auto(frame, spec, y, classes)
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


MAX_ONEHOT = 30  # the most frequent values of a categorical column get a one-hot column; rarer ones share zeros


def fit_auto(frame: pd.DataFrame, spec, y: np.ndarray, classes: int) -> dict:
    """The automatic encoding, fitted on a fold's training rows: kinds inferred per column (features.numeric /
    categorical / drop force them), dates into parts and free text into counts (numeric), numbers de-skewed and
    standardised with a missing indicator, categories one-hot (the most frequent) for the network and linear model
    and as one ordinal code (ordered by the label) for the trees."""
    from kit.columns import date_parts, infer_kinds

    forced = {**{c: "numeric" for c in spec.numeric}, **{c: "categorical" for c in spec.categorical},
              **{c: "drop" for c in spec.drop}}
    _check_columns(frame, list(forced))
    kinds = infer_kinds(frame, skip=set(forced))
    kinds |= {c: {"kind": k, "reason": "set in features"} for c, k in forced.items()}
    state = {"auto": True, "kinds": {c: kinds[c] for c in frame.columns if c in kinds}, "numeric": {},
             "categorical": {}, "ordinal": {}, "counts": {}, "group_rates": {}}
    for column, entry in state["kinds"].items():  # whether the hour is a part is settled here, for every split
        if entry["kind"] == "date":
            entry["hour"] = "hour" in date_parts(frame[column], entry.get("format")).columns
    frame = _derive(frame, state["kinds"])
    for column in _of_kind(state["kinds"], "numeric", "date", "text", derived=frame.columns):
        state["numeric"][column] = _fit_number(numbers(frame[column]))
    target = _ordering_target(y, classes)
    for column in _of_kind(state["kinds"], "categorical"):
        keys = _keys(frame[column])
        state["categorical"][column] = sorted(keys.value_counts().index[:MAX_ONEHOT].tolist())
        state["ordinal"][column] = _ordinal_codes(keys, target)
    return state


def _of_kind(kinds: dict, *wanted: str, derived=()) -> list[str]:
    """Columns of the wanted kinds; dates and text stand for their derived columns (`column.part`)."""
    out = []
    for column, entry in kinds.items():
        if entry["kind"] not in wanted:
            continue
        out += [c for c in derived if c.startswith(f"{column}.")] if entry["kind"] in ("date", "text") else [column]
    return out


def _derive(frame: pd.DataFrame, kinds: dict) -> pd.DataFrame:
    """Date columns into their parts and text columns into counts, as `column.part` columns beside the raw ones."""
    from kit.columns import date_parts, text_features

    extra = []
    for column, entry in kinds.items():
        if entry["kind"] in ("date", "text"):
            values = frame[column]
            parts = date_parts(values, entry.get("format"), entry["hour"]) if entry["kind"] == "date" \
                else text_features(values)
            extra.append(parts.set_axis([f"{column}.{p}" for p in parts.columns], axis=1).set_index(frame.index))
    return pd.concat([frame, *extra], axis=1) if extra else frame


def _fit_number(values: pd.Series) -> dict:
    """Median imputation, a missing indicator when the fold has gaps, log1p of skewed magnitudes, standardisation."""
    entry = {"median": _finite_or(values.median(), 0.0), "missing": bool(values.isna().any()), "log": False}
    filled = values.fillna(entry["median"])
    if filled.nunique() > 2 and abs(float(filled.skew())) > 1:
        entry["log"] = True
        filled = _signed_log(filled)
    entry["mean"], entry["std"] = float(filled.mean()), float(filled.std(ddof=0)) or 1.0
    return entry


def _signed_log(values: pd.Series) -> pd.Series:
    return np.sign(values) * np.log1p(values.abs())


def _ordering_target(y: np.ndarray, classes: int) -> np.ndarray:
    """What orders a category's ordinal code: the positive share (binary), the mean value (regression, classes=0);
    for several classes nothing, so frequency orders them."""
    if classes == 0:
        return np.asarray(y, dtype=float)
    return (np.asarray(y) == 1).astype(float) if classes == 2 else np.zeros(len(y))


def _ordinal_codes(keys: pd.Series, target: np.ndarray) -> dict[str, int]:
    """Category -> code 1..n, ordered by the shrunk mean label, then by frequency; an unseen value gets 0."""
    stats = pd.DataFrame({"k": keys.to_numpy(), "t": target}).groupby("k")["t"].agg(["sum", "count"])
    prior, weight = (float(np.mean(target)) if len(target) else 0.0), 10.0
    stats["mean"] = (stats["sum"] + prior * weight) / (stats["count"] + weight)
    order = stats.sort_values(["mean", "count"], kind="stable").index
    return {str(k): i + 1 for i, k in enumerate(order)}


def encode(frame: pd.DataFrame, state: dict, own: np.ndarray | None = None) -> np.ndarray:
    """The float32 feature matrix for `frame` under a fitted encoding. `own`: the labels of these rows when they
    are the very rows the encoding was fitted on (training); each row's own label is then taken out of its group
    features, so that no row ever sees its own label."""
    if state.get("auto"):
        return _encode_auto(frame, state)
    parts = [_group_rates(frame, entry, own) for entry in state.get("group_rates", {}).values()]
    frame = _add_counts(frame, state["counts"])
    for column, entry in state["numeric"].items():
        parts.append(((_impute(frame, column, entry) - entry["mean"]) / entry["std"]).to_numpy()[:, None])
    for column, vocab in state["categorical"].items():
        values = _keys(frame[column]).to_numpy()
        parts.append((values[:, None] == np.asarray(vocab)[None, :]).astype(float))  # unseen -> all zeros
    return np.hstack(parts).astype(np.float32)


def _encode_auto(frame: pd.DataFrame, state: dict) -> np.ndarray:
    """The automatic encoding's columns: numbers, missing indicators, one-hot categories, ordinal codes."""
    missing = [c for c, e in state["kinds"].items() if e["kind"] != "drop" and c not in frame.columns]
    if missing:
        raise KitError(f"the input lacks column(s) {missing}, which the model was trained with")
    frame = _derive(frame, state["kinds"])
    scaled, gaps = [], []
    for column, entry in state["numeric"].items():
        values = numbers(frame[column])
        filled = values.fillna(entry["median"])
        filled = _signed_log(filled) if entry["log"] else filled
        scaled.append(((filled - entry["mean"]) / entry["std"]).to_numpy(dtype=np.float32))
        if entry["missing"]:
            gaps.append(values.isna().to_numpy(dtype=np.float32))
    parts = [np.stack(scaled + gaps, axis=1)] if scaled or gaps else []
    for column, vocab in state["categorical"].items():
        codes = pd.Index(vocab).get_indexer(_keys(frame[column]))  # -1: not a one-hot value
        onehot = np.zeros((len(frame), len(vocab)), dtype=np.float32)
        hit = np.flatnonzero(codes >= 0)
        onehot[hit, codes[hit]] = 1
        parts.append(onehot)
    for column, codes in state["ordinal"].items():
        parts.append(_keys(frame[column]).map(codes).fillna(0).to_numpy(dtype=np.float32)[:, None])
    if not parts:
        raise KitError("no usable feature column: every column was dropped (the kinds are in the training log)")
    return np.hstack(parts).astype(np.float32, copy=False)


def learner_columns(state: dict, reads: str) -> list[int] | None:
    """The encoded columns a learner that `reads` "ordinal" category codes (trees) or "onehot" columns (the network,
    the linear model) takes (None: all); kit/learners/ says which each learner reads."""
    if not state.get("ordinal"):
        return None
    onehot = {f"{c}={v}" for c, vocab in state["categorical"].items() for v in vocab}
    skip = onehot if reads == "ordinal" else {f"{c}#code" for c in state["ordinal"]}
    return [i for i, name in enumerate(feature_names(state)) if name not in skip]


def encode_folds(frame: pd.DataFrame, states: list[dict]) -> np.ndarray:
    """The exported graph's input: every fold's encoding of `frame`, side by side."""
    return np.hstack([encode(frame, state) for state in states])


def feature_names(state: dict) -> list[str]:
    """The encoded columns' names, in order."""
    names = []
    for new, entry in state.get("group_rates", {}).items():
        names += [f"{new}={c}" for c in range(1, len(entry["prior"]))] + [f"{new}_known"]
    names += list(state["numeric"])
    names += [f"{c}#missing" for c, e in state["numeric"].items() if e.get("missing")]
    for column, vocab in state["categorical"].items():
        names += [f"{column}={v}" for v in vocab]
    names += [f"{c}#code" for c in state.get("ordinal", {})]
    return names


def warn_unseen(frame: pd.DataFrame, states: list[dict]) -> None:
    """Name categorical values that no fold saw in training: they are encoded as unknown (all zeros)."""
    seen = "ordinal" if states[0].get("auto") else "categorical"  # auto: one-hot covers the frequent values only
    for column in [c for c in states[0][seen] if c in frame.columns]:
        known = set().union(*(state[seen].get(column, {}) for state in states))
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
    """Category values as strings (a number as `as_text` writes it), a missing value as "" (its own category)."""
    return as_text(values).where(values.notna(), "").astype(str)


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

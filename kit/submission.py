"""Build, validate and atomically write submission.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit import atomic
from kit.config import Config
from kit.errors import KitError


def make_submission(ids: list[str], probs: np.ndarray, config: Config) -> pd.DataFrame:
    """One row per test id with the predicted class index, in the order the competition expects."""
    sub = config.submission
    frame = pd.DataFrame({sub.id_column: ids, sub.target_column: probs.argmax(1).astype(np.int64)})
    if sub.sort_by_id:
        frame = frame.sort_values(sub.id_column, key=_id_order, kind="stable").reset_index(drop=True)
    return frame


def validate_submission(frame: pd.DataFrame, expected_ids: list[str], config: Config) -> None:
    """Raise KitError unless `frame` has the right columns, one row per test id, and valid class indices."""
    sub = config.submission
    columns = [sub.id_column, sub.target_column]
    if list(frame.columns) != columns:
        raise KitError(f"submission columns are {list(frame.columns)}; expected {columns}")
    if len(frame) != len(expected_ids):
        raise KitError(f"submission has {len(frame)} rows; the test set has {len(expected_ids)}")
    ids = frame[sub.id_column].astype(str)
    duplicated = ids[ids.duplicated()].tolist()
    if duplicated:
        raise KitError(f"submission repeats ids {duplicated[:5]}")
    missing = sorted(set(expected_ids) - set(ids))
    if missing:
        raise KitError(f"submission lacks test ids {missing[:5]} (and has ids not in the test set instead)")
    values = pd.to_numeric(frame[sub.target_column], errors="coerce")
    top = len(config.classes) - 1
    bad = values.isna() | (values != values.round()) | (values < 0) | (values > top)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise KitError(
            f"submission {sub.target_column!r} on row {row + 1} is {frame[sub.target_column].iloc[row]!r}; "
            f"expected an integer class index from 0 to {top}"
        )


def write_submission(frame: pd.DataFrame, path: Path, expected_ids: list[str], config: Config) -> Path:
    """Validate, then write via a temporary file so a failure never leaves a partial submission."""
    validate_submission(frame, expected_ids, config)
    path = Path(path)
    if path.is_dir():
        path = path / "submission.csv"
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _id_order(ids: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(ids, errors="coerce")
    return numeric if numeric.notna().all() else ids.astype(str)

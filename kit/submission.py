"""Build, validate and atomically write submission.csv in the form the competition scores.

What goes in the value columns follows the metric: labels for label metrics (a tabular competition's own label text, an
image competition's class name or index, space-separated tags), probabilities for probability metrics (binary: the
positive class's, in one column; multiclass: one column per class), values for regression. The header, column order and
ids follow the competition's sample_submission.csv when the config names one (data.sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit import atomic
from kit.config import Config
from kit.errors import KitError
from kit.metrics import metric_of
from kit.target import get_target
from kit.tasks import task_class


def read_sample(config: Config) -> pd.DataFrame | None:
    """The competition's sample submission (as text), or None when the config names none."""
    if not config.data.sample:
        return None
    path = config.path(config.data.sample)
    if not path.is_file():
        raise KitError(f"data.sample {path} not found; point it at the competition's sample_submission.csv "
                       "or remove the key")
    sample = pd.read_csv(path, dtype=str, keep_default_na=False)
    if sample.shape[1] < 2:
        raise KitError(f"{path} has {sample.shape[1]} column(s); a sample submission has an id and a value column")
    return sample


def check_test_ids(config: Config, ids: list[str] | None) -> None:
    """Before training: the test ids (None while the test data is not there) are unique and are the sample
    submission's, so a mismatch is found before the minutes are spent, not by `make predict` after them."""
    if ids is None:
        return
    twice = pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist()
    if twice:
        raise KitError(f"the test data repeats the id(s) {twice[:5]} ({config.data.id}); each test row needs its own "
                       "id (check data.id, or ID= for `make new`)")
    sample = read_sample(config)
    if sample is not None:
        same_ids(sample.iloc[:, 0], ids, config.path(config.data.sample), "the test set")


def same_ids(sample_ids: pd.Series, test_ids, sample: Path, test: str) -> None:
    """Refuse a sample submission whose ids are not the test ids: its rows are the ones the competition scores."""
    given, wanted = set(sample_ids.astype(str)), set(map(str, test_ids))
    if given == wanted:
        return
    extra, lacking = sorted(given - wanted), sorted(wanted - given)
    parts = [f"{len(extra):,} of its ids are not in {test} (e.g. {extra[:3]})"] if extra else []
    parts += [f"{len(lacking):,} ids of {test} are not in it (e.g. {lacking[:3]})"] if lacking else []
    raise KitError(f"the sample submission {sample} does not list the test ids: {'; '.join(parts)}. The sample and "
                   "the test data must come from the same competition: check DATA=, TEST= and data.sample (or remove "
                   "data.sample)")


def columns(config: Config, sample: pd.DataFrame | None) -> tuple[str, list[str], bool]:
    """(id column, value columns, one column per class?) of the submission."""
    sub = config.submission
    id_column = sample.columns[0] if sample is not None else sub.id_column or config.data.id
    per_class = get_target(config).per_class_columns(metric_of(config))
    if sample is not None:
        values = list(sample.columns[1:])
        per_class = per_class or (len(values) > 1 and sorted(values) == sorted(config.classes))
        if per_class and sorted(values) != sorted(config.classes):
            raise KitError(f"the sample submission's columns {values} are not the classes {config.classes}; "
                           "the competition scores one probability column per class: list those as classes")
        return id_column, values, per_class
    if per_class:
        return id_column, list(config.classes), True
    return id_column, [sub.target_column or config.target.column], False


def make_submission(ids: list[str], preds: np.ndarray, config: Config, threshold: float | None = None,
                    sample: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per test id from the ensemble's predictions ([N, K] probabilities or [N, 1] values)."""
    id_column, values, per_class = columns(config, sample)
    if per_class:
        index = {name: i for i, name in enumerate(config.classes)}
        frame = pd.DataFrame({name: preds[:, index[name]] for name in values})
    else:
        frame = pd.DataFrame({values[0]: answer(preds, config, threshold)})
    frame.insert(0, id_column, ids)
    if config.submission.sort_by_id:
        frame = frame.sort_values(id_column, key=_id_order, kind="stable").reset_index(drop=True)
    return frame


def answer(preds: np.ndarray, config: Config, threshold: float | None) -> np.ndarray:
    """The one value column: a value, the positive class's probability, or a label as the task writes it."""
    return get_target(config).answer(preds, metric_of(config), threshold, task_class(config.task).label_names(config))


def validate_submission(frame: pd.DataFrame, expected_ids: list[str], config: Config,
                        sample: pd.DataFrame | None = None) -> None:
    """Raise KitError unless `frame` has the sample's (or the config's) columns, one row per test id (the sample's
    ids when there is one), and finite values of the right kind: probabilities in [0, 1], known labels."""
    id_column, values, per_class = columns(config, sample)
    if list(frame.columns) != [id_column, *values]:
        raise KitError(f"submission columns are {list(frame.columns)}; expected {[id_column, *values]}")
    if len(frame) != len(expected_ids):
        raise KitError(f"submission has {len(frame)} rows; the test set has {len(expected_ids)}")
    ids = frame[id_column].astype(str)
    duplicated = ids[ids.duplicated()].tolist()
    if duplicated:
        raise KitError(f"submission repeats ids {duplicated[:5]}")
    missing = sorted(set(map(str, expected_ids)) - set(ids))
    if missing:
        raise KitError(f"submission lacks test ids {missing[:5]} (and has ids not in the test set instead)")
    if sample is not None:
        same_ids(sample[id_column], ids, config.path(config.data.sample), "the test set")
    for column in values:
        _check_values(frame[column], column, config, per_class)


def _check_values(values: pd.Series, column: str, config: Config, per_class: bool) -> None:
    needs = metric_of(config).needs
    if needs == "label":  # as text: a label column read back from a CSV holds numbers
        names = task_class(config.task).label_names(config)
        bad, expected = get_target(config).invalid_answers(values.astype(str), names)
        bad = pd.Series(bad, index=values.index)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() | np.isinf(numbers)
        expected = "a finite number"
        if needs == "proba" or per_class:
            bad |= (numbers < 0) | (numbers > 1)
            expected = "a probability from 0 to 1"
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise KitError(f"submission {column!r} on row {row + 1} is {str(values.iloc[row])!r}; expected {expected}")


def write_submission(frame: pd.DataFrame, path: Path, expected_ids: list[str], config: Config,
                     sample: pd.DataFrame | None = None) -> Path:
    """Validate, then write via a temporary file so a failure never leaves a partial submission."""
    validate_submission(frame, expected_ids, config, sample)
    path = Path(path)
    if path.is_dir():
        path = path / "submission.csv"
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _id_order(ids: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(ids, errors="coerce")
    return numeric if numeric.notna().all() else ids.astype(str)

"""Image competitions given as CSV files, Kaggle's layout: `data.labels` (train.csv) names each training image by its id
(`data.id`) with its label (the `target.column` label column, space-separated for tags, or one 0/1 column per class
listed in `target.columns`, one-hot or multi-hot); the images sit in `data.images`, named by the id with or without an
extension; the test images are named by a CSV (`data.test: test.csv`, images in `data.images`), else by the sample
submission's ids or their own folder (`data.test: test/`). Every problem is one KitError raised before any run folder
exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.images import EXTENSIONS, list_unlabelled

SHOWN = 5  # ids named in an error


def listed(config) -> bool:
    """Whether the competition lists its training images in a CSV (data.labels), not in folder names."""
    return bool(config.data.labels)


def training_files(config, path: Path | None = None) -> tuple[Path, Path]:
    """(labels CSV, image folder): the config's, or those names inside `path` (DATA=<folder>)."""
    labels, images = config.path(config.data.labels), config.path(config.data.images or ".")
    if path is not None:
        labels, images = Path(path) / labels.name, Path(path) / (config.data.images or ".")
    return labels, images


def read_ids(path: Path, column: str, what: str) -> pd.DataFrame:
    """A CSV as text whose `column` names one image per row, each once."""
    from kit.tasks.tabular import read_csv_text

    if not path.is_file():
        raise KitError(f"{what} file not found: {path}; point data.{'labels' if what == 'labels' else 'test'} (or "
                       "DATA=, a folder holding it) at the CSV")
    frame = read_csv_text(path)
    if column not in frame.columns:
        raise KitError(f"{path} has no id column {column!r} (data.id); its columns: {', '.join(frame.columns)}")
    ids = frame[column]
    if ids.isna().any():
        raise KitError(f"{path}: {column!r} is empty on line {int(ids.isna().to_numpy().argmax()) + 2}")
    twice = ids[ids.duplicated()].unique().tolist()
    if twice:
        raise KitError(f"{path} names the image(s) {twice[:SHOWN]} twice; each image is one row")
    return frame


def label_text(config, frame: pd.DataFrame, path: Path) -> pd.Series:
    """Each row's label as text: the label column's; with 0/1 columns, the name of the column holding a row's 1
    (one-hot), or when some row holds several 1s or none (multi-hot), its columns' names space-separated (tags)."""
    columns = config.target.columns
    if not columns:
        column = config.target.column
        if column not in frame.columns:
            raise KitError(f"{path} has no label column {column!r} (target.column); its columns: "
                           f"{', '.join(frame.columns)}")
        empty = frame[column].isna()
        if empty.any():
            raise KitError(f"{path}: label {column!r} is empty on line {int(empty.to_numpy().argmax()) + 2}; every "
                           "training image needs a label")
        return frame[column]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KitError(f"{path} lacks the 0/1 column(s) {missing} of target.columns")
    hot = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = ~hot.isin([0, 1]).all(axis=1)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise KitError(f"{path}: line {row + 2} has {frame[columns].iloc[row].tolist()} in target.columns; each of "
                       "them holds 0 or 1")
    names, hot = np.asarray(columns, dtype=object), hot.to_numpy().astype(bool)
    if (hot.sum(axis=1) == 1).all():
        return pd.Series(names[hot.argmax(1)], index=frame.index)
    return pd.Series([" ".join(names[row]) for row in hot], index=frame.index)


def image_path(folder: Path, name: str) -> Path | None:
    """The image that `name` names under `folder` (a file name or a path below it), with or without its extension."""
    exact = folder / name
    if exact.is_file() and exact.suffix.lower() in EXTENSIONS:
        return exact
    return next((p for p in (folder / f"{name}{e}" for e in sorted(EXTENSIONS)) if p.is_file()), None)


def find_images(folder: Path, ids: list[str], what: str) -> list[Path]:
    """The image file of each id in `folder`: the id itself, or the id with an image extension; an id holding a '/'
    is a path below the folder (`train_images/abc.jpg`)."""
    if not folder.is_dir():
        raise KitError(f"{what} image folder not found: {folder}; point data.images (or data.test) at it")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
    by_name = {p.name: p for p in files}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    found, missing, doubled = [], [], []
    for name in ids:
        candidates = [by_name[name]] if name in by_name else by_stem.get(name, [])
        if not candidates and "/" in name:
            candidates = [p for p in [image_path(folder, name)] if p is not None]
        if len(candidates) == 1:
            found.append(candidates[0])
        else:
            (doubled if candidates else missing).append(name)
    if missing:
        raise KitError(f"{len(missing)} {what} image(s) named in the CSV are not in {folder}: {missing[:SHOWN]} "
                       f"(looked for the id, and the id with {', '.join(sorted(EXTENSIONS))})")
    if doubled:
        raise KitError(f"{what} image id(s) {doubled[:SHOWN]} match more than one file in {folder} (e.g. "
                       f"{[p.name for p in by_stem[doubled[0]]]}); keep one file per id")
    return found


def test_files(config, path: Path | None = None) -> tuple[list[str], list[Path]]:
    """(ids, image files) of the test split: named by a CSV (data.test or TEST= a .csv; images in data.images),
    else by the sample submission's ids in the test folder, else every image of the test folder (ids: file stems)."""
    data = config.data
    source = Path(path) if path else config.path(data.test)
    if source.suffix.lower() == ".csv":
        ids = read_ids(source, data.id, "test")[data.id].tolist()
        return ids, find_images(config.path(data.images or "."), ids, "test")
    if data.sample and path is None:
        from kit.submission import read_sample

        ids = read_sample(config).iloc[:, 0].tolist()
        return ids, find_images(source, ids, "test")
    paths = list_unlabelled(source)
    return [p.stem for p in paths], paths

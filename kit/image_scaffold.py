"""`make new` for an image competition in Kaggle's layout: a train.csv column whose values name image files in a
folder beside it, the test images named by the sample submission (or test.csv), and the image recipe, sized from
the photos. kit/scaffold.py calls `find_layout` first and hands over when it finds one."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from kit.errors import KitError
from kit.image_csv import image_path
from kit.images import EXTENSIONS
from kit.metrics import get_metric
from kit.target import Multilabel, Target, infer

PROBED = 50  # ids per column, and photos for the size, looked at
RECIPE = {  # the shipped food101-10 recipe: lite0 with ImageNet weights from a pip package, offline
    "tta": {"views": ["identity", "hflip"]}, "cv": {"folds": 3},
    "model": {"name": "tf_efficientnet_lite0", "pretrained": "auto", "dropout": 0.2, "drop_path": 0.1,
              "freeze": ["conv_stem", "bn1", "blocks.0", "blocks.1"]},
    "train": {"epochs": 7, "batch_size": 32, "lr": 0.001, "weight_decay": 0.01, "warmup_epochs": 0.5,
              "label_smoothing": 0.1, "monitor": "metric", "patience": 3}}


@dataclass
class Layout:
    """Where an image competition's files are: the id column and the folders of the training and test images."""

    id: str
    images: Path
    rule: str
    test: Path | None = None
    test_rule: str = ""


@dataclass
class NewImageCompetition:
    """What `make new` inferred and wrote for an image competition."""

    path: Path
    layout: Layout
    target: dict
    kind: type[Target]
    type_rule: str
    metric: str
    metric_rule: str
    sample: Path | None
    size: tuple[int, int]
    classes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        target = self.target.get("column") or f"0/1 columns {', '.join(self.target['columns'])}"
        folder = self.path.parent
        from kit.config import COMPETITIONS_DIR

        comp = folder.name if folder.resolve().parent == COMPETITIONS_DIR else str(folder)
        return "\n".join([
            f"wrote {self.path}",
            f"  images:  {self.layout.images} ({self.layout.rule})",
            f"  test:    {self.layout.test} ({self.layout.test_rule})",
            f"  id:      {self.layout.id}",
            f"  target:  {target}",
            f"  type:    {self.kind.name} ({self.type_rule})",
            f"  metric:  {self.metric} ({self.metric_rule})",
            f"  classes: {', '.join(self.classes) or 'none (values)'}",
            f"  size:    training crops {self.size[0]} px, test {self.size[1]} px (from the photos' own size)",
            f"next:  make train predict COMP={comp}"])


def _image_names(folder: Path) -> tuple[set[str], set[str]]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
    return {p.name for p in files}, {p.stem for p in files}


def _names_images(values: pd.Series, folder: Path, names: tuple[set[str], set[str]]) -> bool:
    """Whether the first values each name an image of `folder`: by its file name, its name without the extension, or
    a path under the folder (`train_images/abc.jpg`, the folder named in the column)."""
    probe = values.dropna().astype(str).head(PROBED)
    return len(probe) > 0 and all(v in names[0] or v in names[1] or ("/" in v and image_path(folder, v) is not None)
                                  for v in probe)


def _folders(data: Path, chosen: str | None) -> list[Path]:
    """The folders that may hold images: the one chosen (IMAGES=, TEST=), else DATA and its sub-folders."""
    return [data / chosen] if chosen else [data, *(p for p in sorted(data.iterdir()) if p.is_dir())]


def find_layout(data: Path, train: pd.DataFrame, id_column: str | None = None,
                images: str | None = None) -> Layout | None:
    """The column of train.csv naming image files in a folder of `data` (IMAGES= / ID= settle an ambiguity);
    None when no column names images (a table)."""
    names = {folder: _image_names(folder) for folder in _folders(data, images) if folder.is_dir()}
    columns = [id_column] if id_column else list(train.columns)
    found = [(c, f) for c in columns if c in train for f, n in names.items() if _names_images(train[c], f, n)]
    if not found:
        if images:
            raise KitError(f"no column of train.csv ({', '.join(columns)}) names the images in {data / images}; "
                           "check IMAGES= (and ID=)")
        return None
    if len(found) > 1:
        named = "; ".join(f"column {c} names the images in {f.relative_to(data)}/" for c, f in found)
        raise KitError(f"the training images are ambiguous: {named}; settle it with ID=<column> and IMAGES=<folder>")
    column, folder = found[0]
    by_path = "/" in str(train[column].iloc[0])
    return Layout(column, folder, f"column {column} names its files{' by their path' if by_path else ''}"
                  + ("" if images else ", found by looking"))


def find_test(data: Path, layout: Layout, ids: pd.Series, rule: str, test: str | None = None) -> Layout:
    """The layout with the folder holding the test images that `ids` name (the training folder when it has them;
    TEST= names the folder)."""
    folders = _folders(data, test) if test else [layout.images, *(f for f in _folders(data, None)
                                                                   if f != layout.images)]
    for folder in folders:
        if folder.is_dir() and _names_images(ids, folder, _image_names(folder)):
            return dataclasses.replace(layout, test=folder, test_rule=f"{rule} name its files")
    raise KitError(f"the test images that {rule} name are in no folder of {data} (looked in "
                   f"{', '.join(str(f.relative_to(data)) for f in folders)}); name the folder with TEST=<folder>")


def find_test_folder(data: Path, layout: Layout, test: str | None = None) -> Layout:
    """Without a sample submission or test.csv: every image of the test folder (TEST=, else the one folder of DATA
    named like test* that holds images), its ids the file names without their extension."""
    rule = "every image in it, ids are the file names without extension"
    if test:
        if not (data / test).is_dir():
            raise KitError(f"TEST={test} is not a folder of {data}")
        return dataclasses.replace(layout, test=data / test, test_rule=f"given by TEST=; {rule}")
    found = [f for f in _folders(data, None)[1:] if f != layout.images and "test" in f.name.lower()
             and _image_names(f)[0]]
    if len(found) != 1:
        raise KitError(f"{data} has neither a sample submission nor test.csv naming the test images, and "
                       + (f"several folders of test images ({', '.join(f.name for f in found)})" if found else
                          "no folder named test* holding images") + "; name the folder with TEST=<folder>")
    return dataclasses.replace(layout, test=found[0], test_rule=f"the one folder named test*; {rule}")


def infer_target(train: pd.DataFrame, layout: Layout, metric, given: str | None) -> tuple[dict, type[Target], str]:
    """(target config, kind, rule): one label column (space-separated tags make a multilabel target), or 0/1
    columns, one-hot (a single 1 per row) or multi-hot (tags)."""
    others = [c for c in train.columns if c != layout.id] if given is None else [given]
    if len(others) == 1:
        labels = train[others[0]]
        if labels.isna().any():
            raise KitError(f"train.csv: label {others[0]!r} is empty on line {int(labels.isna().argmax()) + 2}")
        kind, rule = infer(labels, metric, others[0])
        return {"column": others[0]}, kind, rule
    hot = train[others].apply(pd.to_numeric, errors="coerce")
    if not hot.isin([0, 1]).all().all():
        raise KitError(f"the target is ambiguous: train.csv has {', '.join(others)} beside the id; settle it with "
                       "TARGET=<column>")
    names = np.asarray(others, dtype=object)
    rows = hot.to_numpy().astype(bool)
    if (rows.sum(axis=1) == 1).all():
        kind, _ = infer(pd.Series(others), metric)
        return {"columns": others}, kind, f"{len(others)} 0/1 columns with a single 1 per row (one-hot)"
    kind, _ = infer(pd.Series([" ".join(names[row]) for row in rows]), metric, "the 0/1 columns", [Multilabel])
    return {"columns": others}, kind, f"{len(others)} 0/1 columns, some rows with several 1s or none (multi-hot)"


def photo_size(folder: Path, names: list[str]) -> tuple[int, int]:
    """(training crop, test size) from the median shorter side of some photos: crops at about that side (64 to
    160 px, a multiple of 32), tested up to 1.4 times larger (FixRes; at most 224 px, never above the photos)."""
    sides = []
    for name in names[:PROBED]:
        path = image_path(folder, name)
        if path is not None:
            with Image.open(path) as image:
                sides.append(min(image.size))
    side = float(np.median(sides)) if sides else 160.0
    size = int(min(160, max(64, round(side / 32) * 32)))
    return size, int(min(224, max(size, round(min(side * 1.4, max(side, size)) / 32) * 32)))


def new_image_competition(path: Path, data: Path, train: pd.DataFrame, layout: Layout, sample_path: Path | None,
                          metric: str | None, target: str | None, today: datetime.date, test: str | None = None
                          ) -> tuple[NewImageCompetition, str]:
    """What the image competition's config.yaml holds, and its text."""
    from kit.scaffold import _read

    if sample_path is not None:
        layout = find_test(data, layout, _read(sample_path).iloc[:, 0], "the sample submission's ids", test)
    elif (data / "test.csv").is_file():
        layout = find_test(data, layout, _read(data / "test.csv")[layout.id], "test.csv's ids", test)
    else:
        layout = find_test_folder(data, layout, test)
    target_config, kind, type_rule = infer_target(train, layout, get_metric(metric) if metric else None, target)
    classes = target_config.get("columns") or kind.classes_of(train[target_config["column"]])
    metric, metric_rule = (metric, "given by METRIC=") if metric else (
        kind.usual_metric, f"the usual one for {kind.name}; METRIC= picks another")
    size = photo_size(layout.images, train[layout.id].astype(str).tolist())
    data_config = {"labels": str(data / "train.csv"), "images": str(layout.images), "id": layout.id,
                   "test": str(layout.test)}
    if sample_path is not None:
        data_config["sample"] = str(sample_path)
    elif layout.test == layout.images and (data / "test.csv").is_file():  # the folder holds training images too
        data_config["test"] = str(data / "test.csv")
    values = {"task": "image", "metric": metric, "data": data_config, "target": target_config,
              "image": {"size": size[0], "test_size": size[1]}, **RECIPE}
    header = f"# {path.parent.name}: written by `make new` from {data} on {today.isoformat()}; type {kind.name} " \
             f"({type_rule}), metric {metric} ({metric_rule}). Edit freely; `make new ... FORCE=1` rewrites it.\n"
    text = header + yaml.safe_dump(values, sort_keys=False, allow_unicode=True, width=1 << 30)
    if yaml.safe_load(text) != values:
        raise AssertionError(f"config.yaml does not load back to {values}")
    return NewImageCompetition(path, layout, target_config, kind, type_rule, metric, metric_rule, sample_path, size,
                               classes), text

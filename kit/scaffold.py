"""`make new`: competitions/<name>/config.yaml written from a competition's files (train.csv, test.csv and the
sample submission): the id, the target and its type, the metric, the classes, and every column's kind."""

from __future__ import annotations

import contextlib
import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from kit.atomic import write_text
from kit.columns import infer_kind, infer_kinds
from kit.config import COMPETITIONS_DIR
from kit.errors import KitError
from kit.image_scaffold import find_layout, new_image_competition
from kit.metrics import REGISTRY
from kit.target import Target, infer, learnable, sorted_labels

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class NewCompetition:
    """What `make new` inferred and wrote."""

    path: Path
    id: str
    id_rule: str
    target: str
    target_rule: str
    kind: type[Target]
    type_rule: str
    metric: str
    metric_rule: str
    sample: Path | None
    classes: list[str] = field(default_factory=list)
    kinds: dict[str, dict] = field(default_factory=dict)
    not_in_test: list[str] = field(default_factory=list)
    id_is_date: bool = False  # bike sharing's id is its timestamp, which kit does not use as a feature

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for kind in self.kinds.values():
            counts[kind["kind"]] = counts.get(kind["kind"], 0) + 1
        lines = [f"wrote {self.path}",
                 f"  sample:  {self.sample.name if self.sample else 'none (no *submission*.csv)'}",
                 f"  id:      {self.id} ({self.id_rule})",
                 f"  target:  {self.target} ({self.target_rule})",
                 f"  type:    {self.kind.name} ({self.type_rule})",
                 f"  metric:  {self.metric} ({self.metric_rule})"]
        if self.classes:
            note = self.kind.note(self.classes)
            lines.append(f"  classes: {', '.join(self.classes)}{'; ' + note if note else ''}")
        lines.append("  columns: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + " (kinds in the file)")
        if self.not_in_test:
            lines.append(f"  dropped: {', '.join(self.not_in_test)} (in train.csv only)")
        if self.id_is_date:
            lines.append(f"  note:    the id {self.id} holds dates; kit does not use the id as a feature")
        folder = self.path.parent
        comp = folder.name if folder.resolve().parent == COMPETITIONS_DIR else str(folder)  # what load_config finds
        return "\n".join([*map(_comment, lines), f"next:  make train predict COMP={comp}"])


def new_competition(comp: str, data: str | Path, competitions: Path, metric: str | None = None,
                    target: str | None = None, id_column: str | None = None, force: bool = False,
                    today: datetime.date | None = None, images: str | None = None, test: str | None = None):
    """Infer a competition's config from the files in `data` and write `competitions/comp/config.yaml`
    atomically; any ambiguity is a KitError naming the candidates and the option that settles it. A train.csv
    column naming image files in a folder of `data` (IMAGES= names the folder; TEST= the test images') makes it an
    image competition."""
    if not NAME.fullmatch(comp):
        raise KitError(f"COMP={comp!r} is not a folder name; use letters, digits, '.', '_' and '-'")
    folder = Path(competitions) / comp
    path = folder / "config.yaml"
    if path.exists() and not force:
        raise KitError(f"{path} exists; `make new ... FORCE=1` (--force) rewrites it")
    data = Path(data).expanduser().resolve()
    train, sample_path = _read(data / "train.csv"), _find_sample(data)
    layout = find_layout(data, train, id_column, images)
    if layout is not None:
        result, text = new_image_competition(path, data, train, layout, sample_path, metric, target,
                                             today or datetime.date.today(), test)
        _write(folder, path, text)
        return result
    test = _read(data / "test.csv")
    sample = _read(sample_path) if sample_path else None
    id_column, id_rule = _infer_id(train, test, sample, id_column)
    _check_ids(data, train, test, id_column, sample, sample_path)
    target, target_rule, sample_classes = _infer_target(train, test, sample, id_column, target)
    labels = train[target]
    if labels.isna().any():
        raise KitError(f"{data / 'train.csv'}: target {target!r} is empty on line "
                       f"{int(labels.isna().to_numpy().argmax()) + 2}; every training row needs a label")
    custom = metric is not None and metric not in REGISTRY
    if custom:  # the competition's own metric: a .py file already in its folder (kit/metrics.py runs it)
        metric = metric if metric.endswith(".py") else f"{metric}.py"
        if Path(metric).name != metric or not (folder / metric).is_file():
            raise KitError(f"METRIC={metric.removesuffix('.py')} is not a metric kit knows ({', '.join(REGISTRY)}) "
                           f"and {folder / Path(metric).name} does not exist (a competition's own metric)")
    kind, type_rule = infer(labels, REGISTRY[metric] if metric and not custom else None, target,
                            learnable(RECIPE["learners"]))
    if metric is None:
        metric, metric_rule = kind.usual_metric, f"the usual one for {kind.name}; METRIC= picks another"
    else:
        metric_rule = f"given by METRIC=, the competition's own {metric}" if custom else "given by METRIC="
    classes = _classes(labels, sample_classes, target, sample_path) if kind.classes_of(labels) else []
    not_in_test = [c for c in train.columns if c not in test.columns and c not in (id_column, target)]
    kinds = infer_kinds(train, skip=[id_column, target, *not_in_test])
    result = NewCompetition(path, id_column, id_rule, target, target_rule, kind, type_rule, metric, metric_rule,
                            sample_path, classes, kinds, not_in_test, infer_kind(train[id_column])["kind"] == "date")
    _write(folder, path, render(result, data, today or datetime.date.today()))
    return result


def _write(folder: Path, path: Path, text: str) -> None:
    """config.yaml, atomically; a folder made for it is removed again when the write fails."""
    created = not folder.exists()
    try:
        write_text(path, text)
    except BaseException:
        if created:  # atomic_path has removed its temp file: the folder is empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


RECIPE = {"learners": ["gbdt", "catboost", "linear", "net"]}  # what a new tabular competition trains


def render(new: NewCompetition, data: Path, today: datetime.date) -> str:
    """The config.yaml text; it loads back (yaml.safe_load) to exactly the inferred values."""
    values: dict = {"task": "tabular", "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"),
                                                "id": new.id}}
    if new.sample:
        values["data"]["sample"] = str(new.sample)
    values["target"] = {"column": new.target, "type": new.kind.name}
    values["metric"] = new.metric
    lines = [_comment(f"# {new.path.parent.name}: written by `make new` from {data} on {today.isoformat()}. "
                      "Edit freely; `make new ... FORCE=1` rewrites it."),
             "task: tabular", "data:", *(f"  {k}: {_scalar(v)}" for k, v in values["data"].items()),
             f"target: {{column: {_scalar(new.target)}, type: {new.kind.name}}}   " + _comment(f"# {new.type_rule}"),
             f"metric: {_scalar(new.metric)}   " + _comment(f"# {new.metric_rule}")]
    if new.classes:
        values["classes"] = new.classes
        note = new.kind.note(new.classes)
        lines.append(f"classes: {_scalar(new.classes)}   # label order" + (f"; {note}" if note else ""))
    values["learners"] = RECIPE["learners"]
    lines += [f"learners: {_scalar(RECIPE['learners'])}   # blended on their out-of-fold predictions "
              "(README: Learners)"]
    if new.not_in_test:
        values["features"] = {"drop": new.not_in_test}
        lines += ["features:", f"  drop: {_scalar(new.not_in_test)}   # in train.csv but not in test.csv"]
    lines += ["# Column kinds as inferred from train.csv now (kit infers them again on every training fold; to "
              "override,", "# list columns under features: numeric: [...] / categorical: [...] / drop: [...]):",
              _comment(f"#   {_scalar(new.id)}: id" + (" (its values are dates)" if new.id_is_date else "")),
              _comment(f"#   {_scalar(new.target)}: target")]
    lines += [_comment(f"#   {_scalar(c)}: {k['kind']} ({k['reason']})") for c, k in new.kinds.items()]
    lines += [_comment(f"#   {_scalar(c)}: drop (in train.csv but not in test.csv)") for c in new.not_in_test]
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != values:  # a quoting slip would silently change a name: never write that
        raise AssertionError(f"config.yaml does not load back to {values}:\n{text}")
    return text


def _read(path: Path) -> pd.DataFrame:
    """A CSV as text, by the tabular task's reader (empty cells -> NaN)."""
    from kit.tasks.tabular import read_csv_text

    if not path.is_file():
        raise KitError(f"{path} not found; DATA= must be a folder holding train.csv and test.csv")
    return read_csv_text(path)


def _find_sample(data: Path) -> Path | None:
    """sample_submission.csv, else the first *submission*.csv by name (Titanic: gender_submission.csv)."""
    if (data / "sample_submission.csv").is_file():
        return data / "sample_submission.csv"
    return next(iter(sorted(p for p in data.glob("*submission*.csv") if p.is_file())), None)


def _infer_id(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame | None,
              given: str | None) -> tuple[str, str]:
    if given is not None:
        missing = [name for name, frame in (("train.csv", train), ("test.csv", test)) if given not in frame]
        if missing:
            raise KitError(f"ID={given} is not a column of {' and '.join(missing)}; columns of test.csv: "
                           f"{', '.join(test.columns)}")
        return given, "given by ID="
    if sample is not None and sample.columns[0] in train and sample.columns[0] in test:
        return sample.columns[0], "the sample submission's first column"
    unique = [c for c in train.columns if c in test.columns and _unique(train[c]) and _unique(test[c])]
    named = [c for c in unique if c.lower().endswith("id")]
    if len(unique) == 1:
        return unique[0], "the one column of both tables whose values are unique in each"
    if len(named) == 1:
        return named[0], f"unique in both tables (as are {', '.join(c for c in unique if c != named[0])}) and " \
                         "named like an id"
    if not unique:
        raise KitError("no column of both train.csv and test.csv has a unique value in every row; name the id "
                       "column with ID=<column>")
    raise KitError(f"the id column is ambiguous: {', '.join(unique)} are unique in both train.csv and test.csv; "
                   "settle it with ID=<column>")


def _check_ids(data: Path, train: pd.DataFrame, test: pd.DataFrame, id_column: str, sample: pd.DataFrame | None,
               sample_path: Path | None) -> None:
    """Each id names one row of each table, and the sample submission lists exactly test.csv's ids."""
    from kit.submission import same_ids

    for name, frame in (("train.csv", train), ("test.csv", test)):
        ids = frame[id_column]
        twice = ids[ids.duplicated()].dropna().unique().tolist()
        if twice or ids.isna().any():
            problem = f"repeats {twice[:5]}" if twice else f"is empty on line {int(ids.isna().to_numpy().argmax()) + 2}"
            unique = [c for c in train.columns if c in test.columns and _unique(train[c]) and _unique(test[c])]
            raise KitError(f"{data / name}: the id column {id_column!r} {problem}; an id names one row. Name a column "
                           "unique in both tables with ID=<column>" + (f" ({', '.join(unique)})" if unique else ""))
    if sample is not None:
        same_ids(sample.iloc[:, 0], test[id_column], sample_path, "test.csv")


def _infer_target(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame | None, id_column: str,
                  given: str | None) -> tuple[str, str, list[str]]:
    """(target column, the rule, the sample's class columns when it has one per class)."""
    answers = [c for c in sample.columns if c != sample.columns[0]] if sample is not None else []
    per_class = answers if len(answers) > 1 and not any(c in train for c in answers) else []  # otto: Class_1..9
    if given is not None:
        if given not in train or given == id_column:
            raise KitError(f"TARGET={given} is not a column of train.csv other than the id; columns: "
                           f"{', '.join(c for c in train.columns if c != id_column)}")
        return given, "given by TARGET=", per_class
    found = [c for c in answers if c in train and c != id_column]
    if len(found) == 1:
        return found[0], "the sample submission's column found in train.csv", []
    if len(found) > 1:
        raise KitError(f"the sample submission names several train.csv columns ({', '.join(found)}); kit predicts "
                       "one target: settle it with TARGET=<column>")
    missing = [c for c in train.columns if c not in test.columns and c != id_column]
    if len(missing) == 1:
        rule = "the one train.csv column missing from test.csv" + ("; the sample's other columns are its classes"
                                                                    if per_class else "")
        return missing[0], rule, per_class
    if not missing:
        raise KitError("every train.csv column is also in test.csv, so the target cannot be told; name it with "
                       "TARGET=<column>")
    raise KitError(f"the target is ambiguous: train.csv has {', '.join(missing)} that test.csv lacks; settle it "
                   "with TARGET=<column>")


def _classes(labels: pd.Series, sample_classes: list[str], target: str, sample: Path | None) -> list[str]:
    """The label order: the sample's class columns when it has them, else sorted (numerically when numbers)."""
    if sample_classes:
        values = sorted(labels.unique())
        if set(sample_classes) != set(values):
            raise KitError(f"{sample} has columns {', '.join(sample_classes)}, but target {target!r} takes the "
                           f"values {', '.join(values[:20])}; they must be the same classes (or name TARGET=)")
        return list(sample_classes)
    return sorted_labels(labels)


def _unique(values: pd.Series) -> bool:
    return bool(values.notna().all() and values.is_unique)


def _scalar(value) -> str:
    """`value` as a one-line YAML flow value that loads back to itself (names may hold spaces, colons, quotes)."""
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    # Dumped inside a flow list, so that ',', '[' or '{' get quoted too (the value may sit in [...] or {...}).
    text = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=1 << 30).strip()[1:-1]
    if re.search(r"[\r\n\x85\u2028\u2029]", text):  # a line break: the double-quoted style escapes it
        text = yaml.safe_dump(value, default_style='"', allow_unicode=True, width=1 << 30).strip()
    return text


def _comment(text: str) -> str:
    return re.sub(r"[\r\n\x85\u2028\u2029]", " ", text)

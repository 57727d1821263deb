"""Tabular task: CSV in, feature encoding fitted on the training fold only (kit/encoding.py), then the configured
learners on it: the MLP (trained by the shared loop), gradient-boosted trees, logistic regression (kit/learners/)."""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit import contract
from kit.batches import TensorBatches
from kit.columns import typed
from kit.config import Config
from kit.distributed import SINGLE, Dist
from kit.encoding import encode, encode_folds, feature_names, fit_encoding, learner_columns, warn_unseen
from kit.ensemble import Blend, FoldEnsemble, TargetInverse
from kit.errors import KitError
from kit.learners import get_learner
from kit.models import MLP
from kit.runtime import CHUNK_ROWS
from kit.target import Target, get_target, settle, target_class
from kit.tasks import Samples

log = logging.getLogger(__name__)


class TabularTask:
    unit = "rows"  # what a sample is, in logs and progress bars
    def __init__(self, config: Config):
        self.config = config
        self.spec = config.features
        self.engineer = contract.load_engineer(config.path(self.spec.code)) if self.spec.code else (lambda df: df)

    @property
    def target(self) -> Target:
        return get_target(self.config)

    @classmethod
    def check(cls, config: Config) -> None:
        """Any learner and target kind; the config's checks cover the rest."""

    @classmethod
    def known_kind(cls, config: Config) -> type[Target] | None:
        return None if config.target.type == "auto" else target_class(config.target.type)

    @classmethod
    def label_names(cls, config: Config) -> list[str]:
        """A label submission writes the competition's own label text."""
        return list(config.classes)

    def score_names(self) -> tuple[str, str]:
        return "valid", "OOF"

    def resolve(self, path: Path | None = None) -> Config:
        """The config with the target's type and classes settled from the training labels (kit/target/)."""
        file = Path(path) if path else self.config.path(self.config.data.train)
        if file.is_dir():
            file = file / Path(self.config.data.train).name
        column = self.config.target.column
        try:
            labels = pd.read_csv(file, usecols=[column], **AS_TEXT)[column]
        except (OSError, ValueError, pd.errors.ParserError):  # read_table names the problem precisely
            labels = read_table(file, self.config, labelled=True, check_target=False)[column]
        return settle(self.config, labels)

    def load(self, split: str, path: Path | None = None) -> Samples:
        labelled = split == "train"
        frame = self.read(split, path)
        column = self.config.target.column
        y = self.target.encode(frame[column]) if labelled else None
        ids = frame[self.config.data.id].tolist()
        data = frame.drop(columns=[column, *([] if self.spec.raw_numeric or self.spec.raw_text
                                             else [self.config.data.id])], errors="ignore")
        return Samples(ids, y, self.engineer(data))

    def read(self, split: str, path: Path | None = None) -> pd.DataFrame:
        """The raw table of a split (the config's file, or `path`: a CSV or a folder holding one), checked."""
        path = Path(path) if path else self.config.path(getattr(self.config.data, split))
        if path.is_dir():  # a folder holding the file the config names
            path = path / Path(getattr(self.config.data, split)).name
        return read_table(path, self.config, labelled=split == "train")

    def tta_meta(self) -> None:
        """Tables have no test-time augmentation."""
        return None

    def test_ids(self) -> list[str] | None:
        path = self.config.path(self.config.data.test)
        if not path.is_file():
            return None
        column = self.config.data.id
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, usecols=[column])[column].tolist()
        except (ValueError, pd.errors.ParserError):  # read_table names the problem precisely
            return read_table(path, self.config, labelled=False)[column].tolist()

    def raw_test(self, path: Path | None = None) -> tuple[list[str], pd.DataFrame]:
        """(ids, the raw rows) of the test split, as a serving program would pass them to kit.runtime."""
        frame = self.read("test", path)
        return frame[self.config.data.id].tolist(), frame[self.input_columns(frame)]

    def input_columns(self, frame: pd.DataFrame) -> list[str]:
        """The raw columns a row must bring: the listed ones, or (inferred kinds) all but the id and target."""
        spec = self.spec
        if spec.raw_numeric or spec.raw_text:
            return [*spec.raw_numeric, *spec.raw_text]
        return [c for c in frame.columns if c not in (self.config.data.id, self.config.target.column)]

    def fit(self, train: Samples) -> dict:
        state = fit_encoding(train.data, self.spec, train.y, len(self.config.classes))
        scale = self.target.fit_scale(train.y)  # regression: the network fits standardised transform(y)
        if scale is not None:
            state["target"] = scale
        return state

    def features(self, samples: Samples, state: dict, train: bool) -> np.ndarray:
        """Encoded features; `train`: these are the rows the state was fitted on (their own labels leave their
        group features)."""
        return encode(samples.data, state, own=samples.y if train else None)

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist = SINGLE,
               device: torch.device | None = None, encoded: np.ndarray | None = None) -> TensorBatches:
        """`encoded`: the rows already encoded with the network's columns (a fold's, shared with its learners)."""
        if encoded is None:
            x = self.features(samples, state, train)
            columns = learner_columns(state, "onehot")  # the MLP reads one-hot categories
            encoded = x if columns is None else x[:, columns]
        y = samples.y.astype(np.float32) if self.target.predicts_values else samples.y  # in the target's units
        batch = self.config.train.batch_for(len(samples)) * (1 if train else 2)
        return TensorBatches(torch.from_numpy(np.ascontiguousarray(encoded)), torch.from_numpy(y), batch,
                             device or dist.device, shuffle=train, dist=dist, epoch_rows=self.config.train.epoch_rows)

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        m = self.config.model
        columns = learner_columns(state, "onehot")  # the MLP reads one-hot categories
        width = len(feature_names(state)) if columns is None else len(columns)
        return MLP(width, m.hidden, self.target.width, m.dropout)

    def ensemble(self, folds: list[dict[str, torch.nn.Module]], states: list[dict],
                 weights: list[float] | None) -> torch.nn.Module:
        """Each fold has its own fitted encoding; the ensemble input is their concatenation. Regression learners
        answer in transform(y) units, blended and averaged there; the served module (weights given) inverts it."""
        members, start = [], 0
        for fold, state in zip(folds, states, strict=True):
            width = len(feature_names(state))
            learners = {name: get_learner(name) for name in fold}
            outputs = {name: Columns(learners[name].served(m, state, self.target),
                                     learner_columns(state, learners[name].reads)) for name, m in fold.items()}
            members.append(ColumnSlice(Blend(outputs, weights), start, start + width))
            start += width
        ensemble = FoldEnsemble(members)
        return TargetInverse(ensemble, self.config.target.transform) if weights is not None else ensemble

    def batches(self, samples: Samples, states: list[dict]) -> Iterator[torch.Tensor]:
        """The encoded rows in chunks of CHUNK_ROWS, as kit.runtime runs an export: memory stays flat in the rows."""
        warn_unseen(samples.data, states)
        for start in range(0, len(samples), CHUNK_ROWS):
            yield torch.from_numpy(encode_folds(samples.data.iloc[start : start + CHUNK_ROWS], states))

    def write_contract(self, states: list[dict], width: int, folder: Path) -> dict:
        """meta.json["input"]; copies the feature code into the export folder, which the contract names."""
        code = None
        if self.spec.code:
            source = self.config.path(self.spec.code)
            shutil.copyfile(source, folder / "features.py")
            code = {"file": "features.py", "sha256": contract.sha256(folder / "features.py"),
                    "copied_from": source.name}
        raw = self.read("train")
        names = self.input_columns(raw)
        listed = self.spec.raw_numeric or self.spec.raw_text
        numeric = self.spec.raw_numeric if listed else [c for c in names if contract.numbers_only(raw[c])]
        return contract.describe_table(raw, names, numeric, states, self.config.data.id, width, code)


class Columns(torch.nn.Module):
    """A learner that reads some of its fold's encoded columns (kit.encoding.learner_columns); None: all."""

    def __init__(self, model: torch.nn.Module, columns: list[int] | None):
        super().__init__()
        self.model = model
        self.register_buffer("columns", None if columns is None else torch.tensor(columns, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x if self.columns is None else x.index_select(1, self.columns))


class ColumnSlice(torch.nn.Module):
    """A fold's module that reads its own columns of the concatenated encoding."""

    def __init__(self, model: torch.nn.Module, start: int, stop: int):
        super().__init__()
        self.model, self.start, self.stop = model, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, self.start : self.stop])


READ_ROWS = 200_000  # rows read and typed at a time: memory holds one chunk's text, not the table's
AS_TEXT = {"dtype": str, "keep_default_na": False, "na_values": [""]}  # cells as written; only an empty one is NaN


def read_csv_text(path: Path, typed_except: Collection[str] | None = None) -> pd.DataFrame:
    """A CSV's cells as text (empty cells: NaN) with stripped column names; `make new` reads the same way. With
    `typed_except`, every other column of numbers is held as float64 (kit.columns.typed), read a chunk at a time."""
    try:
        if typed_except is None:
            frame = pd.read_csv(path, **AS_TEXT)
        else:
            frame = _read_typed(path, typed_except)
    except pd.errors.EmptyDataError:
        raise KitError(f"{path} is empty; expected a CSV with a header row and data rows") from None
    except UnicodeDecodeError as exc:
        raise KitError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise KitError(f"{path} is not a well-formed CSV: {exc}") from None
    if frame.empty:
        raise KitError(f"{path} has a header but no data rows")
    if frame.shape[1] == 1:
        _refuse_other_separator(path, str(frame.columns[0]))
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _read_typed(path: Path, keep: Collection[str]) -> pd.DataFrame:
    """The CSV typed chunk by chunk. A column is float64 where every chunk typed it so; a column typed in some
    chunks but not others is read again as text, so that no value's writing changes."""
    parts = []
    with pd.read_csv(path, chunksize=READ_ROWS, **AS_TEXT) as reader:
        for chunk in reader:
            parts.append(typed(chunk, keep=[c for c in chunk.columns if str(c).strip() in keep]))
    if not parts:
        return pd.read_csv(path, **AS_TEXT)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    floats = [{c for c in part.columns if pd.api.types.is_float_dtype(part[c])} for part in parts]
    mixed = [c for c in frame.columns if c in set.union(*floats) - set.intersection(*floats)]
    if mixed:
        again = pd.read_csv(path, usecols=[frame.columns.get_loc(c) for c in mixed], **AS_TEXT)
        frame[mixed] = again[mixed].to_numpy()
    return frame


def _refuse_other_separator(path: Path, header: str) -> None:
    """A one-column read whose header holds ';', tab or '|': the file is separated by that, not by commas."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        head = f.read(1 << 16)
    try:
        sep = csv.Sniffer().sniff(head, delimiters=";\t|").delimiter
    except csv.Error:  # no consistent separator: a genuine one-column file
        return
    if sep in header:
        shown = {"\t": "tabs"}.get(sep, repr(sep))
        raise KitError(f"{path} looks separated by {shown}, not by commas (its header: {header[:80]!r}); kit reads "
                       f"comma-separated files: re-save it with commas, e.g. python -c \"import pandas as pd; "
                       f"pd.read_csv('{path}', sep={sep!r}, dtype=str).to_csv('{path}', index=False)\"")


def read_table(path: Path, config: Config, labelled: bool, check_target: bool = True) -> pd.DataFrame:
    """Read a CSV as text and check it has what the competition needs, naming any problem."""
    what = "training" if labelled else "test"
    flag = "DATA" if labelled else "TEST"
    if not Path(path).is_file():
        raise KitError(f"{what} file not found: {path}; point {flag}=... at the CSV or its folder")
    data, spec = config.data, config.features
    listed = spec.raw_numeric or spec.raw_text  # a feature file takes these columns as it was written for
    frame = read_csv_text(path, typed_except=None if listed else [data.id, config.target.column])
    required = [data.id, *([config.target.column] if labelled else []), *spec.raw_numeric, *spec.raw_text]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        hint = " (is the delimiter a comma?)" if len(frame.columns) == 1 else ""
        raise KitError(
            f"{path} is missing required column(s) {', '.join(map(repr, missing))}; "
            f"found: {', '.join(frame.columns)}{hint}"
        )
    ids = frame[data.id]
    if ids.isna().any():
        raise KitError(f"{path}: {data.id!r} is empty on line {int(ids.isna().to_numpy().argmax()) + 2}")
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise KitError(f"{path}: duplicate {data.id!r} values {duplicated[:5]}; each row needs a unique id")
    if labelled and check_target:
        _check_target(frame, path, config)
    return contract.parse_numeric(frame, spec.raw_numeric, str(path))


def _check_target(frame: pd.DataFrame, path: Path, config: Config) -> None:
    """Every training row has a label the target kind can take (one of the classes, or a finite number)."""
    column = config.target.column
    get_target(config).check_labels(frame[column], f"{path}: target {column!r}")

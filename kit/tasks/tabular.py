"""Tabular task: CSV in, feature encoding fitted on the training fold only (kit/encoding.py), then the configured
learners on it: the MLP (trained by the shared loop), gradient-boosted trees, logistic regression (kit/learners.py)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit import contract, learners, target
from kit.batches import TensorBatches
from kit.config import Config
from kit.distributed import SINGLE, Dist
from kit.encoding import encode, encode_folds, feature_names, fit_encoding, learner_columns, warn_unseen
from kit.ensemble import Blend, FoldEnsemble, TargetInverse
from kit.errors import KitError
from kit.models import MLP
from kit.runtime import CHUNK_ROWS
from kit.tasks import Samples

log = logging.getLogger(__name__)


class TabularTask:
    def __init__(self, config: Config):
        self.config = config
        self.spec = config.features
        self.engineer = contract.load_engineer(config.path(self.spec.code)) if self.spec.code else (lambda df: df)

    @property
    def regression(self) -> bool:
        return self.config.target.type == "regression"

    def resolve(self, path: Path | None = None) -> Config:
        """The config with the target's type and classes settled from the training labels (kit/target.py)."""
        file = Path(path) if path else self.config.path(self.config.data.train)
        if file.is_dir():
            file = file / Path(self.config.data.train).name
        column = self.config.target.column
        try:
            labels = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""], usecols=[column])[column]
        except (OSError, ValueError, pd.errors.ParserError):  # read_table names the problem precisely
            labels = read_table(file, self.config, labelled=True, check_target=False)[column]
        return target.resolve(self.config, labels)

    def load(self, split: str, path: Path | None = None) -> Samples:
        labelled = split == "train"
        frame = self.read(split, path)
        column = self.config.target.column
        y = None
        if labelled and self.regression:
            y = frame[column].to_numpy(dtype=np.float64)
        elif labelled:
            index = {name: i for i, name in enumerate(self.config.classes)}
            y = frame[column].map(index).to_numpy(dtype=np.int64)
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
        if self.regression:  # the network fits standardised transform(y); the scale is part of the fold
            t = target.forward(train.y, self.config.target.transform)
            state["target"] = {"transform": self.config.target.transform, "mean": float(t.mean()),
                               "std": float(t.std()) or 1.0}
        return state

    def features(self, samples: Samples, state: dict, train: bool) -> np.ndarray:
        """Encoded features; `train`: these are the rows the state was fitted on (their own labels leave their
        group features)."""
        return encode(samples.data, state, own=samples.y if train else None)

    def fit_learners(self, train: Samples, state: dict, seed: int) -> dict[str, torch.nn.Module]:
        """The fold's learners other than the network, fitted on the same encoded training rows."""
        x = self.features(train, state, train=True)
        y = target.forward(train.y, self.config.target.transform) if self.regression else train.y
        fitted = {}
        for name in (n for n in self.config.learners if n != "net"):
            columns = learner_columns(state, name)
            start = time.perf_counter()
            fitted[name] = learners.fit_learner(name, self.config, x if columns is None else x[:, columns], y, seed)
            log.info("%s fitted on %d rows in %.1f s", name, len(x), time.perf_counter() - start)
        return fitted

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist = SINGLE,
               device: torch.device | None = None) -> TensorBatches:
        x = self.features(samples, state, train)
        columns = learner_columns(state, "net")
        x = x if columns is None else x[:, columns]
        y = samples.y.astype(np.float32) if self.regression else samples.y  # values stay in the target's units
        batch = self.config.train.batch_for(len(samples)) * (1 if train else 2)
        return TensorBatches(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), batch,
                             device or dist.device, shuffle=train, dist=dist)

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        m = self.config.model
        columns = learner_columns(state, "net")
        width = len(feature_names(state)) if columns is None else len(columns)
        return MLP(width, m.hidden, 1 if self.regression else len(self.config.classes), m.dropout)

    def ensemble(self, folds: list[dict[str, torch.nn.Module]], states: list[dict],
                 weights: list[float] | None) -> torch.nn.Module:
        """Each fold has its own fitted encoding; the ensemble input is their concatenation. Regression learners
        answer in transform(y) units, blended and averaged there; the served module (weights given) inverts it."""
        members, start = [], 0
        for fold, state in zip(folds, states, strict=True):
            width = len(feature_names(state))
            outputs = {name: Columns(self.output(name, m, state), learner_columns(state, name))
                       for name, m in fold.items()}
            members.append(ColumnSlice(Blend(outputs, weights), start, start + width))
            start += width
        ensemble = FoldEnsemble(members)
        return TargetInverse(ensemble, self.config.target.transform) if weights is not None else ensemble

    def output(self, name: str, model: torch.nn.Module, state: dict) -> torch.nn.Module:
        """A learner's module as the blend takes it: probabilities, or values in transform(y) units."""
        if name != "net":
            return model
        if self.regression:
            return Unstandardize(model, state["target"]["mean"], state["target"]["std"])
        return Softmax(model)

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


class Softmax(torch.nn.Module):
    """The network's logits as probabilities, like the other learners' outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class Unstandardize(torch.nn.Module):
    """The regression network's standardised output back in transform(y) units."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.std + self.mean


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


def read_table(path: Path, config: Config, labelled: bool, check_target: bool = True) -> pd.DataFrame:
    """Read a CSV as text and check it has what the competition needs, naming any problem."""
    what = "training" if labelled else "test"
    flag = "DATA" if labelled else "TEST"
    if not Path(path).is_file():
        raise KitError(f"{what} file not found: {path}; point {flag}=... at the CSV or its folder")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise KitError(f"{path} is empty; expected a CSV with a header row and data rows") from None
    except UnicodeDecodeError as exc:
        raise KitError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise KitError(f"{path} is not a well-formed CSV: {exc}") from None
    if frame.empty:
        raise KitError(f"{path} has a header but no data rows")
    frame.columns = [c.strip() for c in frame.columns]
    data, spec = config.data, config.features
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
    frame = contract.parse_numeric(frame, spec.raw_numeric, str(path))
    if labelled and check_target:
        _check_target(frame, path, config)
    return frame


def _check_target(frame: pd.DataFrame, path: Path, config: Config) -> None:
    """Every training row has a label the target type can take: one of the classes, or a finite number."""
    column = config.target.column
    labels = frame[column]
    if config.target.type == "regression":
        values = pd.to_numeric(labels, errors="coerce")
        bad = values.isna() | np.isinf(values)
        expected = "a finite number"
    else:
        bad = ~labels.isin(config.classes)
        expected = f"one of {config.classes}"
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise KitError(f"{path}: target {column!r} on line {row + 2} is {labels.iloc[row]!r}; expected {expected}")
    if config.target.type == "regression":
        frame[column] = pd.to_numeric(labels)

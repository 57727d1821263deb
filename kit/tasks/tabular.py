"""Tabular task: CSV in, feature encoding fitted on the training fold only, an MLP on top."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from kit.batches import DatasetBatches
from kit.config import Config, FeaturesConfig
from kit.distributed import SINGLE, Dist
from kit.ensemble import FoldEnsemble
from kit.errors import KitError
from kit.models import MLP
from kit.tasks import Samples

log = logging.getLogger(__name__)


class TabularTask:
    def __init__(self, config: Config):
        self.config = config
        self.spec = config.features
        self.engineer = load_engineer(config.path(self.spec.code)) if self.spec.code else (lambda df: df)

    def load(self, split: str, path: Path | None = None) -> Samples:
        path = Path(path) if path else self.config.path(getattr(self.config.data, split))
        if path.is_dir():  # a folder holding the file the config names
            path = path / Path(getattr(self.config.data, split)).name
        labelled = split == "train"
        frame = read_table(path, self.config, labelled=labelled)
        y = None
        if labelled:
            index = {name: i for i, name in enumerate(self.config.classes)}
            y = frame[self.config.data.target].map(index).to_numpy(dtype=np.int64)
        ids = frame[self.config.data.id].tolist()
        return Samples(ids, y, self.engineer(frame.drop(columns=[self.config.data.target], errors="ignore")))

    def fit(self, train: Samples) -> dict:
        return fit_encoding(train.data, self.spec)

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist = SINGLE,
               device: torch.device | None = None) -> DatasetBatches:
        data = TensorDataset(torch.from_numpy(encode(samples.data, state)), torch.from_numpy(samples.y))
        batch = self.config.train.batch_size * (1 if train else 2)
        workers = 0 if self.config.train.num_workers == "auto" else self.config.train.num_workers
        return DatasetBatches(data, batch, device or dist.device, shuffle=train, workers=workers, dist=dist)

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        m = self.config.model
        return MLP(len(feature_names(state)), m.hidden, len(self.config.classes), m.dropout)

    def ensemble(self, models: list[torch.nn.Module], states: list[dict]) -> torch.nn.Module:
        # Each fold has its own fitted encoding; the ensemble input is their concatenation.
        members, start = [], 0
        for model, state in zip(models, states, strict=True):
            width = len(feature_names(state))
            members.append(ColumnSlice(model, start, start + width))
            start += width
        return FoldEnsemble(members)

    def batches(self, samples: Samples, states: list[dict]) -> Iterator[torch.Tensor]:
        warn_unseen(samples.data, states)
        yield torch.from_numpy(np.hstack([encode(samples.data, s) for s in states]))


class ColumnSlice(torch.nn.Module):
    """A fold model that reads its own columns of the concatenated encoding and returns probabilities."""

    def __init__(self, model: torch.nn.Module, start: int, stop: int):
        super().__init__()
        self.model, self.start, self.stop = model, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x[:, self.start : self.stop]), dim=1)


def read_table(path: Path, config: Config, labelled: bool) -> pd.DataFrame:
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
    required = [data.id, *([data.target] if labelled else []), *spec.raw_numeric, *spec.raw_text]
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
    frame = parse_numeric(frame, spec.raw_numeric, str(path))
    if labelled:
        target = frame[data.target]
        unknown = target[~target.isin(config.classes)]
        if len(unknown):
            row = int(unknown.index[0])
            raise KitError(
                f"{path}: target {data.target!r} on line {row + 2} is {target.iloc[row]!r}; "
                f"expected one of {config.classes}"
            )
    return frame


def parse_numeric(frame: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame:
    """Columns as floats (empty -> NaN); a value that is not a finite number is refused with its line."""
    frame = frame.copy()
    for column in columns:
        text = frame[column]
        number = pd.to_numeric(text, errors="coerce")
        bad = (text.notna() & number.isna()) | np.isinf(number)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise KitError(f"{where}: column {column!r} must be numeric, but line {row + 2} holds {text.iloc[row]!r} "
                           "(leave missing values empty; NaN and inf are refused)")
        frame[column] = number.astype(float)
    return frame


def load_engineer(path: Path) -> Callable[[pd.DataFrame], pd.DataFrame]:
    if not path.is_file():
        raise KitError(f"feature code not found: {path}; fix features.code in the competition config")
    spec = importlib.util.spec_from_file_location(f"kit_features_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "engineer"):
        raise KitError(f"{path} must define engineer(df) -> DataFrame")
    return module.engineer


def fit_encoding(frame: pd.DataFrame, spec: FeaturesConfig) -> dict:
    """Learn imputation values, scaling, frequency tables and vocabularies from `frame` alone."""
    _check_columns(frame, [*spec.numeric, *spec.categorical, *spec.impute_by.values(), *spec.counts.values()])
    counts = {new: {"key": key, "table": _frequencies(frame[key])} for new, key in spec.counts.items()}
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
    return {"numeric": numeric, "categorical": vocab, "counts": counts}


def encode(frame: pd.DataFrame, state: dict) -> np.ndarray:
    """The float32 feature matrix for `frame` under a fitted encoding."""
    frame = _add_counts(frame, state["counts"])
    parts = []
    for column, entry in state["numeric"].items():
        parts.append(((_impute(frame, column, entry) - entry["mean"]) / entry["std"]).to_numpy()[:, None])
    for column, vocab in state["categorical"].items():
        values = _keys(frame[column]).to_numpy()
        parts.append((values[:, None] == np.asarray(vocab)[None, :]).astype(float))  # unseen -> all zeros
    return np.hstack(parts).astype(np.float32)


def warn_unseen(frame: pd.DataFrame, states: list[dict]) -> None:
    """Name categorical values that no fold saw in training: they are encoded as unknown (all zeros)."""
    for column in states[0]["categorical"]:
        known = set().union(*(state["categorical"][column] for state in states))
        values = _keys(frame[column])
        unseen = sorted(set(values) - known)
        if unseen:
            log.warning("column %r holds value(s) never seen in training: %s (%d row(s)); encoded as unknown",
                        column, ", ".join(map(repr, unseen[:5])), int(values.isin(unseen).sum()))


def feature_names(state: dict) -> list[str]:
    names = list(state["numeric"])
    for column, vocab in state["categorical"].items():
        names += [f"{column}={v}" for v in vocab]
    return names


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

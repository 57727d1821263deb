"""Tabular task: CSV in, feature encoding fitted on the training fold only (kit/encoding.py), then the configured
learners on it: the MLP (trained by the shared loop), gradient-boosted trees, logistic regression (kit/learners.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from kit import contract, learners
from kit.batches import DatasetBatches
from kit.config import Config
from kit.distributed import SINGLE, Dist
from kit.encoding import encode, encode_folds, feature_names, fit_encoding, warn_unseen
from kit.ensemble import Blend, FoldEnsemble
from kit.errors import KitError
from kit.models import MLP
from kit.tasks import Samples


class TabularTask:
    def __init__(self, config: Config):
        self.config = config
        self.spec = config.features
        self.engineer = contract.load_engineer(config.path(self.spec.code)) if self.spec.code else (lambda df: df)

    def load(self, split: str, path: Path | None = None) -> Samples:
        labelled = split == "train"
        frame = self.read(split, path)
        y = None
        if labelled:
            index = {name: i for i, name in enumerate(self.config.classes)}
            y = frame[self.config.data.target].map(index).to_numpy(dtype=np.int64)
        ids = frame[self.config.data.id].tolist()
        return Samples(ids, y, self.engineer(frame.drop(columns=[self.config.data.target], errors="ignore")))

    def read(self, split: str, path: Path | None = None) -> pd.DataFrame:
        """The raw table of a split (the config's file, or `path`: a CSV or a folder holding one), checked."""
        path = Path(path) if path else self.config.path(getattr(self.config.data, split))
        if path.is_dir():  # a folder holding the file the config names
            path = path / Path(getattr(self.config.data, split)).name
        return read_table(path, self.config, labelled=split == "train")

    def raw_test(self, path: Path | None = None) -> tuple[list[str], pd.DataFrame]:
        """(ids, the raw rows) of the test split, as a serving program would pass them to kit.runtime."""
        frame = self.read("test", path)
        spec = self.spec
        return frame[self.config.data.id].tolist(), frame[[*spec.raw_numeric, *spec.raw_text]]

    def fit(self, train: Samples) -> dict:
        return fit_encoding(train.data, self.spec, train.y, len(self.config.classes))

    def features(self, samples: Samples, state: dict, train: bool) -> np.ndarray:
        """Encoded features; `train`: these are the rows the state was fitted on (their own labels leave their
        group features)."""
        return encode(samples.data, state, own=samples.y if train else None)

    def fit_learners(self, train: Samples, state: dict, seed: int) -> dict[str, torch.nn.Module]:
        """The fold's learners other than the network, fitted on the same encoded training rows."""
        x = self.features(train, state, train=True)
        return {name: learners.fit_learner(name, self.config, x, train.y, seed)
                for name in self.config.learners if name != "net"}

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist = SINGLE,
               device: torch.device | None = None) -> DatasetBatches:
        x = self.features(samples, state, train)
        data = TensorDataset(torch.from_numpy(x), torch.from_numpy(samples.y))
        batch = self.config.train.batch_size * (1 if train else 2)
        workers = 0 if self.config.train.num_workers == "auto" else self.config.train.num_workers
        return DatasetBatches(data, batch, device or dist.device, shuffle=train, workers=workers, dist=dist)

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        m = self.config.model
        return MLP(len(feature_names(state)), m.hidden, len(self.config.classes), m.dropout)

    def ensemble(self, folds: list[dict[str, torch.nn.Module]], states: list[dict],
                 weights: list[float] | None) -> torch.nn.Module:
        # Each fold has its own fitted encoding; the ensemble input is their concatenation.
        members, start = [], 0
        for fold, state in zip(folds, states, strict=True):
            width = len(feature_names(state))
            probs = {name: Softmax(m) if name == "net" else m for name, m in fold.items()}
            members.append(ColumnSlice(Blend(probs, weights), start, start + width))
            start += width
        return FoldEnsemble(members)

    def batches(self, samples: Samples, states: list[dict]) -> Iterator[torch.Tensor]:
        warn_unseen(samples.data, states)
        yield torch.from_numpy(encode_folds(samples.data, states))

    def write_contract(self, states: list[dict], width: int, folder: Path) -> dict:
        """meta.json["input"]; copies the feature code into the export folder, which the contract names."""
        code = None
        if self.spec.code:
            source = self.config.path(self.spec.code)
            shutil.copyfile(source, folder / "features.py")
            code = {"file": "features.py", "sha256": contract.sha256(folder / "features.py"),
                    "copied_from": source.name}
        return contract.describe_table(self.read("train"), self.spec, self.config.data.id, states, width, code)


class Softmax(torch.nn.Module):
    """The network's logits as probabilities, like the other learners' outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class ColumnSlice(torch.nn.Module):
    """A fold's module that reads its own columns of the concatenated encoding."""

    def __init__(self, model: torch.nn.Module, start: int, stop: int):
        super().__init__()
        self.model, self.start, self.stop = model, start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, self.start : self.stop])


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
    frame = contract.parse_numeric(frame, spec.raw_numeric, str(path))
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



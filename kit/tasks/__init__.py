"""What differs by data type lives behind this one small interface; everything else is shared."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kit.batches import Batches
from kit.config import Config
from kit.distributed import Dist
from kit.errors import KitError
from kit.target import Target


@dataclass
class Samples:
    """Rows of a split: ids (as strings), labels (None for test) and the task's raw data."""

    ids: list[str]
    y: np.ndarray | None  # class indices (int64), 0/1 tags [N, K] (float32), or values in the target's units
    data: Any  # tabular: a DataFrame; image: a uint8 [N, H, W, 3] array (memory-mapped cache)
    is_valid: np.ndarray | None = None  # rows of the data's own validation split (for cv.folds=given)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> Samples:
        data = self.data.iloc[index].reset_index(drop=True) if hasattr(self.data, "iloc") else self.data[index]
        return Samples([self.ids[i] for i in index], None if self.y is None else self.y[index], data,
                       None if self.is_valid is None else self.is_valid[index])


class Task(Protocol):
    unit: str  # what a sample is, in logs and progress bars: rows, images
    def resolve(self, path: Path | None = None) -> Config:
        """The config with what the training data settles filled in (target type, classes): what a run records."""

    def load(self, split: str, path: Path | None = None) -> Samples:
        """Read the 'train' or 'test' split (from the config, or from `path`)."""

    def fit(self, train: Samples) -> dict:
        """Fit preprocessing on a fold's training part; return it as JSON-able state."""

    def loader(self, samples: Samples, state: dict, train: bool, dist: Dist, device: torch.device | None) -> Batches:
        """The training loop's (input, label) batches on `device` (default: this rank's, `dist.device`;
        kit/batches.py); `train` switches shuffling and augmentation on."""

    def build_model(self, state: dict, pretrained: bool = False) -> torch.nn.Module:
        """A fresh network (learner `net`) for the preprocessing `state` (returns logits); `pretrained` loads
        ImageNet weights."""

    def features(self, samples: Samples, state: dict, train: bool) -> np.ndarray:
        """The rows encoded for the fitted learners (kit/learners/compiled.py): tables only."""

    def score_names(self) -> tuple[str, str]:
        """What the per-epoch validation score and the fold's OOF score measure, printed beside them."""

    @classmethod
    def check(cls, config: Config) -> None:
        """Refuse settings this task cannot take (before any run folder exists)."""

    @classmethod
    def known_kind(cls, config: Config) -> type[Target] | None:
        """The target kind, where the config alone settles it (None: the training labels will)."""

    @classmethod
    def label_names(cls, config: Config) -> list[str]:
        """The labels as a label-valued submission writes them, in class order."""

    def ensemble(self, folds: list[dict[str, torch.nn.Module]], states: list[dict],
                 weights: list[float] | None) -> torch.nn.Module:
        """The servable module: raw batch -> class probabilities, the learners blended with `weights` and averaged
        over the folds; without weights, each learner's probabilities [N, learners, classes]."""

    def batches(self, samples: Samples, states: list[dict]) -> Iterator[torch.Tensor]:
        """The ensemble's input for `samples`, in batches."""

    def test_ids(self) -> list[str] | None:
        """The config's test ids, read cheaply (None while its test data is not there): checked against the sample
        submission before training."""

    def raw_test(self, path: Path | None = None) -> tuple[list[str], Any]:
        """(ids, raw test inputs: table rows or image files) as a serving program passes them to kit.runtime."""

    def tta_meta(self) -> dict | None:
        """meta.json["tta"] of an export: the views in the graph, or None."""

    def write_contract(self, states: list[dict], width: int, folder: Path) -> dict:
        """meta.json["input"] (kit/contract.py) for an export being written to `folder`; files it names are put
        there."""


TASKS = {"tabular": "kit.tasks.tabular:TabularTask", "image": "kit.tasks.image:ImageTask"}  # imported when used


def task_class(name: str) -> type:
    """The task class registered as `name`."""
    if name not in TASKS:
        raise KitError(f"config key 'task' is {name!r}; known tasks: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_task(config: Config) -> Task:
    return task_class(config.task)(config)

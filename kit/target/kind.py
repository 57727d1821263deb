"""What every target kind answers (`Target`), what the inference rules read off a label column (`Labels`), and the
label helpers the kinds share. numpy and pandas at import; torch only inside the methods that build modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from kit.errors import KitError

MAX_CLASSES_OF_NUMBERS = 20  # whole-number labels with at most this many values are classes, more are a regression
QUANTILE_BINS = 10  # regression folds are stratified on this many quantile bins of the target


@dataclasses.dataclass(frozen=True)
class Labels:
    """What the inference rules read off a label column (text, as read)."""

    distinct: int
    numeric: bool  # every label parses as a number
    whole: bool  # ... and every one is a whole number
    tags: int = 0  # distinct space-separated tags, when some label holds several and they make fewer than `distinct`


class Target:
    """A target kind. Class attributes describe the kind; an instance carries what training settled: the classes
    (in output order) and the transform regression learners fit."""

    name: ClassVar[str]
    usual_metric: ClassVar[str]  # `make new`'s metric when METRIC= is not given
    predicts_values: ClassVar[bool] = False  # values [N, 1] rather than class probabilities [N, K]
    library_learners: ClassVar[bool] = True  # scikit-learn, CatBoost and XGBoost learners can fit it (else: net only)
    metric_decides: ClassVar[bool] = False  # inferred only when the metric asks for it (ordinal: qwk)

    def __init__(self, classes: list[str] = (), transform: str = "none"):
        self.classes, self.transform = list(classes), transform

    @property
    def width(self) -> int:
        """Output columns: one per class, or one value."""
        return len(self.classes)

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        """The rule by which a label column is of this kind, or None."""
        raise NotImplementedError

    @classmethod
    def accepts(cls, metric) -> bool:
        """Whether `metric` (kit/metrics.py) can score this kind."""
        raise NotImplementedError

    @classmethod
    def note(cls, classes: list[str]) -> str:
        """What to say beside the classes (binary: which one is positive)."""
        return ""

    @classmethod
    def classes_of(cls, labels: pd.Series) -> list[str]:
        """The classes (output order) that training labels name."""
        return sorted_labels(labels)

    def check_classes(self) -> None:
        """Refuse a classes list this kind cannot take."""

    def encode(self, labels: pd.Series) -> np.ndarray:
        """Training labels (text or numbers, checked) as the learners and metrics take them."""
        raise NotImplementedError

    def invalid(self, labels: pd.Series) -> tuple[np.ndarray, str]:
        """(rows whose label this kind cannot take, what it expects), for the training file's check."""
        raise NotImplementedError

    def check_labels(self, labels: pd.Series, where: str) -> None:
        """Refuse the first label this kind cannot take, naming `where` (file and column) and its line."""
        bad, expected = self.invalid(labels)
        if bad.any():
            row = int(bad.argmax())
            raise KitError(f"{where} on line {row + 2} is {labels.iloc[row]!r}; expected {expected}")

    def strata(self, y: np.ndarray) -> np.ndarray:
        """What folds stratify on: [N] class indices or bins, or [N, K] 0/1 tags (kit/folds.py)."""
        return y

    def truth(self, y: np.ndarray) -> np.ndarray:
        """oof.csv's `target` column: the encoded label of each row."""
        return y

    def class_weights(self, y: np.ndarray):
        """The network's per-class loss weights (train.class_weights), or None where the kind has none."""
        return None

    def forward(self, y: np.ndarray) -> np.ndarray:
        """Labels as the learners fit them."""
        return y

    def inverse(self, preds: np.ndarray) -> np.ndarray:
        """Predictions as the metric scores them (the learners' units back in the target's)."""
        return preds

    def fit_scale(self, y: np.ndarray) -> dict | None:
        """The network's output scale fitted on a fold's training labels (part of the fold's state), or None."""
        return None

    def criterion(self, state: dict, class_weights, label_smoothing: float, device):
        """The network's training loss on its raw outputs."""
        raise NotImplementedError

    def link(self, model, state: dict):
        """The network (raw outputs) as the blend takes a learner: probabilities, or values in the learners' units."""
        raise NotImplementedError

    def from_outputs(self, outputs: np.ndarray, state: dict) -> np.ndarray:
        """The network's raw outputs (numpy) as the metric takes predictions."""
        raise NotImplementedError

    def consumed(self, needs: str, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        """Predictions as a metric that `needs` labels, probabilities or values takes them."""
        raise NotImplementedError

    def tunes_threshold(self, metric) -> bool:
        """Whether a decision threshold is chosen on OOF rows for `metric`."""
        return False

    def best_threshold(self, metric, y: np.ndarray, preds: np.ndarray):
        """The decision threshold(s) with which `metric` scores best on these rows."""
        raise NotImplementedError

    def threshold_text(self, threshold) -> str:
        """The chosen threshold(s) in a few words for the log."""
        return f"decision threshold {threshold:.3f}"

    def answer(self, preds: np.ndarray, metric, threshold: float | None, names: list[str]) -> np.ndarray:
        """A one-column submission's values; `names` are the labels as the competition writes them."""
        raise NotImplementedError

    def invalid_answers(self, values: pd.Series, names: list[str]) -> tuple[np.ndarray, str]:
        """(rows of a label submission column (text) that are not an answer, what an answer is)."""
        shown = f"one of {names}" if len(names) <= 20 else f"one of the {len(names)} classes"
        return ~values.isin(names).to_numpy(), shown

    def per_class_columns(self, metric) -> bool:
        """Whether the submission has one probability column per class."""
        return False

    def oof_columns(self) -> list[str]:
        """Names of the prediction columns in oof.csv."""
        raise NotImplementedError

    def predicted(self, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        """oof.csv's `pred` column: the label index, or the value."""
        raise NotImplementedError

    def recall(self, y: np.ndarray, preds: np.ndarray, threshold: float | None) -> dict:
        """Per class, the share of its rows predicted as it (classes only)."""
        return {}

    def plot(self, y: np.ndarray, preds: np.ndarray, threshold: float | None, path: Path, metric: str,
             score: float) -> None:
        """The run's picture of its OOF predictions: a confusion matrix or residuals."""
        raise NotImplementedError

    def describe(self, preds: np.ndarray, threshold: float | None) -> str:
        """What a submission predicts, in a few words for the log."""
        raise NotImplementedError

    def output_contract(self, column: str, how: str) -> dict:
        """meta.json["output"] of an export."""
        raise NotImplementedError

def read_labels(values: pd.Series) -> Labels:
    seen = values.dropna()
    numbers = pd.to_numeric(seen, errors="coerce")
    numeric = bool(numbers.notna().all())
    distinct = int(seen.nunique())
    split = seen.astype(str).str.split()
    tags = split.explode().nunique() if (split.str.len() > 1).any() else 0
    return Labels(distinct, numeric, numeric and bool((numbers == numbers.round()).all()),
                  int(tags) if tags < distinct else 0)


def sorted_labels(values: pd.Series) -> list[str]:
    """Distinct labels in order: numerically when they are all numbers (so 2 comes before 10), else as text."""
    distinct = pd.Series(values.dropna().astype(str).unique())
    numbers = pd.to_numeric(distinct, errors="coerce")
    order = np.lexsort((distinct.to_numpy(), numbers.to_numpy())) if numbers.notna().all() else np.argsort(
        distinct.to_numpy(), kind="stable")
    return distinct.to_numpy()[order].tolist()


def coordinate_ascent(values: np.ndarray, grid_of, score, rounds: int) -> list[float]:
    """Thresholds chosen by coordinate ascent: each value in turn set to the best point of its grid
    (`grid_of(k, values)`) by `score(values)` (greater is better), the others held; `rounds` passes."""
    for _ in range(rounds):
        for k in range(len(values)):
            grid = grid_of(k, values)
            scores = []
            for t in grid:
                values[k] = t
                scores.append(score(values))
            values[k] = grid[int(np.argmax(scores))]
    return [float(t) for t in values]

"""The target: one class per kind, found in TARGETS (multilabel, binary, ordinal, multiclass, regression). Each owns
what differs by kind: how the kind is inferred from a label column, the fold strata, the network's loss and output link,
the fitted scale and transform and their inverse, what a metric and a submission get, and the export's output contract.
Code elsewhere asks the object (`get_target(config)`); it never compares a kind's name.

numpy and pandas at import; torch only inside the methods that build modules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from kit.errors import KitError

log = logging.getLogger(__name__)

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


class Classes(Target):
    """Binary and multiclass: labels are class indices, predictions class probabilities."""

    @classmethod
    def accepts(cls, metric) -> bool:
        return metric.needs != "value" and not metric.multilabel_only

    def check_classes(self) -> None:
        if len(self.classes) < 2:
            raise KitError(f"a {self.name} target needs at least two classes, got {self.classes}")

    def encode(self, labels: pd.Series) -> np.ndarray:
        return labels.map({name: i for i, name in enumerate(self.classes)}).to_numpy(dtype=np.int64)

    def invalid(self, labels: pd.Series) -> tuple[np.ndarray, str]:
        return ~labels.isin(self.classes).to_numpy(), f"one of {self.classes}"

    def class_weights(self, y: np.ndarray):
        """Inverse class frequencies normalised to mean 1."""
        import torch

        counts = np.bincount(y, minlength=len(self.classes)).astype(np.float32)
        return torch.from_numpy(counts.sum() / np.maximum(counts, 1) / len(counts))

    def criterion(self, state: dict, class_weights, label_smoothing: float, device):
        from torch import nn

        from kit.objective import WeightedCrossEntropy

        if class_weights is not None:
            return WeightedCrossEntropy(class_weights.to(device), label_smoothing)
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def link(self, model, state: dict):
        from kit.ensemble import Softmax

        return Softmax(model)

    def from_outputs(self, outputs: np.ndarray, state: dict) -> np.ndarray:
        e = np.exp(outputs - outputs.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Class indices: the likeliest class."""
        return probs.argmax(1)

    def consumed(self, needs: str, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        return preds if needs == "proba" else self.labels(preds, threshold)

    def answer(self, preds: np.ndarray, metric, threshold: float | None, names: list[str]) -> np.ndarray:
        return np.asarray(names, dtype=object)[self.labels(preds, threshold)]

    def oof_columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]

    def predicted(self, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        return self.labels(preds, threshold)

    def recall(self, y: np.ndarray, preds: np.ndarray, threshold: float | None) -> dict:
        pred = self.labels(preds, threshold)
        return {name: float((pred[y == i] == i).mean()) for i, name in enumerate(self.classes) if (y == i).any()}

    def plot(self, y: np.ndarray, preds: np.ndarray, threshold: float | None, path: Path, metric: str,
             score: float) -> None:
        from kit import plots

        plots.confusion(y, self.labels(preds, threshold), self.classes, path / "confusion.png")

    def describe(self, preds: np.ndarray, threshold: float | None) -> str:
        counts = np.bincount(self.labels(preds, threshold), minlength=len(self.classes))
        return f"predicted class counts {dict(zip(self.classes, counts.tolist(), strict=True))}"

    def output_contract(self, column: str, how: str) -> dict:
        return {"name": "probs", "dtype": "float32", "shape": ["N", len(self.classes)], "values": False,
                "meaning": f"class probabilities, rows sum to 1: {how} (and TTA views)"}


class Binary(Classes):
    """Two classes; the last is the positive one. Probability metrics take p(positive); F1 and MCC a threshold on
    it chosen on out-of-fold rows."""

    name = "binary"
    usual_metric = "roc_auc"

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        return "exactly 2 distinct values" if labels.distinct == 2 else None

    @classmethod
    def note(cls, classes: list[str]) -> str:
        return f"positive: {classes[-1]}"

    def check_classes(self) -> None:
        if len(self.classes) != 2:
            raise KitError(f"the target is binary but holds {len(self.classes)} values {self.classes[:5]}; "
                           "set target.type to multiclass")

    def labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Positive where p(positive) >= threshold, or the likeliest class without one."""
        return (probs[:, 1] >= threshold).astype(np.int64) if threshold is not None else probs.argmax(1)

    def consumed(self, needs: str, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        return preds[:, 1] if needs == "proba" else self.labels(preds, threshold)

    def tunes_threshold(self, metric) -> bool:
        return metric.tuned_threshold

    def best_threshold(self, metric, y: np.ndarray, preds: np.ndarray) -> float:
        """The threshold on p(positive) that scores best on these rows (a grid of their quantiles)."""
        grid = np.unique(np.quantile(preds[:, 1], np.linspace(0.01, 0.99, 99)))
        scores = [metric.score(y, preds, t) for t in grid]
        return float(grid[int(np.argmax(metric.sign * np.asarray(scores)))])

    def answer(self, preds: np.ndarray, metric, threshold: float | None, names: list[str]) -> np.ndarray:
        return preds[:, 1] if metric.needs == "proba" else super().answer(preds, metric, threshold, names)


class Multiclass(Classes):
    """Three or more classes; a probability metric's submission has one column per class."""

    name = "multiclass"
    usual_metric = "log_loss"

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        if not labels.numeric:
            return f"{labels.distinct} distinct values that are not numbers"
        if labels.whole and labels.distinct <= MAX_CLASSES_OF_NUMBERS:
            return f"{labels.distinct} distinct whole numbers (at most {MAX_CLASSES_OF_NUMBERS} make classes)"
        return None

    @classmethod
    def accepts(cls, metric) -> bool:
        return super().accepts(metric) and not metric.two_classes

    def invalid_answers(self, values: pd.Series, names: list[str]) -> tuple[np.ndarray, str]:
        """(rows of a label submission column (text) that are not an answer, what an answer is)."""
        shown = f"one of {names}" if len(names) <= 20 else f"one of the {len(names)} classes"
        return ~values.isin(names).to_numpy(), shown

    def per_class_columns(self, metric) -> bool:
        return metric.needs == "proba"


class Multilabel(Target):
    """Tags: each row holds any number of the classes, written space-separated ("baklava beignets"). The network
    has one sigmoid output per tag, trained by binary cross-entropy; folds are stratified by iterative
    stratification; label metrics (F-beta over samples, macro F1) take the tags whose probability reaches their
    own threshold, chosen per tag on OOF rows. Learners from libraries do not fit it: learners: [net]."""

    name = "multilabel"
    usual_metric = "fbeta_samples"
    library_learners = False

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        return f"space-separated tags: {labels.tags} tags in {labels.distinct} combinations" if labels.tags else None

    @classmethod
    def accepts(cls, metric) -> bool:
        return metric.multilabel

    @classmethod
    def classes_of(cls, labels: pd.Series) -> list[str]:
        return sorted_labels(pd.Series(tag for text in labels.dropna() for tag in str(text).split()))

    def check_classes(self) -> None:
        if len(self.classes) < 2:
            raise KitError(f"a multilabel target needs at least two tags, got {self.classes}")

    def encode(self, labels: pd.Series) -> np.ndarray:
        """[N, K] float32 0/1: row i has a 1 for each of its tags."""
        index = {name: k for k, name in enumerate(self.classes)}
        hot = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
        for i, text in enumerate(labels.fillna("")):
            hot[i, [index[tag] for tag in str(text).split()]] = 1
        return hot

    def invalid(self, labels: pd.Series) -> tuple[np.ndarray, str]:
        known = set(self.classes)
        bad = np.array([not set(str(text).split()) <= known for text in labels.fillna("")], dtype=bool)
        return bad, f"space-separated tags out of {self.classes}"

    def strata(self, y: np.ndarray) -> np.ndarray:
        return y > 0.5

    def truth(self, y: np.ndarray) -> np.ndarray:
        return self.tags(y > 0.5)

    def tags(self, hot: np.ndarray) -> np.ndarray:
        """Space-separated tag text of each row of a [N, K] 0/1 matrix."""
        names = np.asarray(self.classes, dtype=object)
        return np.array([" ".join(names[row]) for row in hot.astype(bool)], dtype=object)

    def criterion(self, state: dict, class_weights, label_smoothing: float, device):
        from kit.objective import TagLoss

        return TagLoss(label_smoothing)

    def link(self, model, state: dict):
        from kit.ensemble import Sigmoid

        return Sigmoid(model)

    def from_outputs(self, outputs: np.ndarray, state: dict) -> np.ndarray:
        return 1 / (1 + np.exp(-outputs))

    def labels(self, probs: np.ndarray, threshold) -> np.ndarray:
        """[N, K] 0/1: the tags whose probability reaches their threshold (0.5 without one)."""
        return (probs >= np.asarray(0.5 if threshold is None else threshold)).astype(np.int64)

    def consumed(self, needs: str, preds: np.ndarray, threshold) -> np.ndarray:
        return preds if needs == "proba" else self.labels(preds, threshold)

    def tunes_threshold(self, metric) -> bool:
        return metric.needs == "label"

    def best_threshold(self, metric, y: np.ndarray, preds: np.ndarray) -> list[float]:
        """Per tag, coordinate ascent: starting from the best common threshold, each tag's threshold in turn
        moves to the grid point that scores best with the others held, for two rounds."""
        grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
        common = grid[int(np.argmax([metric.sign * metric.score(y, preds, t) for t in grid]))]
        chosen = np.full(preds.shape[1], common)
        for _ in range(2):
            for k in range(preds.shape[1]):
                scores = []
                for t in grid:
                    chosen[k] = t
                    scores.append(metric.sign * metric.score(y, preds, chosen))
                chosen[k] = grid[int(np.argmax(scores))]
        return [float(t) for t in chosen]

    def threshold_text(self, threshold) -> str:
        return f"per-tag thresholds {min(threshold):.2f} to {max(threshold):.2f}"

    def answer(self, preds: np.ndarray, metric, threshold, names: list[str]) -> np.ndarray:
        return self.tags(self.labels(preds, threshold))

    def invalid_answers(self, values: pd.Series, names: list[str]) -> tuple[np.ndarray, str]:
        known = set(names)
        bad = np.array([not set(text.split()) <= known for text in values], dtype=bool)
        return bad, f"space-separated tags out of {names}"

    def per_class_columns(self, metric) -> bool:
        return metric.needs == "proba"

    def oof_columns(self) -> list[str]:
        return [f"prob_{c}" for c in self.classes]

    def predicted(self, preds: np.ndarray, threshold) -> np.ndarray:
        return self.tags(self.labels(preds, threshold))

    def recall(self, y: np.ndarray, preds: np.ndarray, threshold) -> dict:
        pred = self.labels(preds, threshold).astype(bool)
        truth = y > 0.5
        return {name: float(pred[truth[:, k], k].mean()) for k, name in enumerate(self.classes) if truth[:, k].any()}

    def plot(self, y: np.ndarray, preds: np.ndarray, threshold, path: Path, metric: str, score: float) -> None:
        from kit import plots

        plots.tag_scores(y > 0.5, self.labels(preds, threshold).astype(bool), self.classes, path / "tags.png")

    def describe(self, preds: np.ndarray, threshold) -> str:
        hot = self.labels(preds, threshold)
        counts = dict(zip(self.classes, hot.sum(0).tolist(), strict=True))
        return f"{hot.sum(1).mean():.2f} tags per row on average; rows per tag {counts}"

    def output_contract(self, column: str, how: str) -> dict:
        return {"name": "probs", "dtype": "float32", "shape": ["N", len(self.classes)], "values": False,
                "tags": True, "meaning": f"per-tag probabilities, each its own sigmoid (rows need not sum to 1): {how} "
                                         "(and TTA views); a tag is predicted when it reaches meta.json's threshold "
                                         "for it (the same order as classes; 0.5 when threshold is null)"}


class Regression(Target):
    """Numbers. Learners fit transform(y) (log1p for RMSLE); the network fits it standardised on the fold; the
    served module inverts both, so predictions are in the target's own units."""

    name = "regression"
    usual_metric = "rmse"
    predicts_values = True

    @property
    def width(self) -> int:
        return 1

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        return f"numbers with {labels.distinct:,} distinct values" if labels.numeric else None

    @classmethod
    def accepts(cls, metric) -> bool:
        return metric.needs == "value"

    @classmethod
    def classes_of(cls, labels: pd.Series) -> list[str]:
        return []

    def check_classes(self) -> None:
        if self.classes:
            raise KitError(f"target.type is regression but classes lists {self.classes}; remove classes")

    def encode(self, labels: pd.Series) -> np.ndarray:
        return pd.to_numeric(labels).to_numpy(dtype=np.float64)

    def invalid(self, labels: pd.Series) -> tuple[np.ndarray, str]:
        values = pd.to_numeric(labels, errors="coerce")
        return (values.isna() | np.isinf(values)).to_numpy(), "a finite number"

    def strata(self, y: np.ndarray) -> np.ndarray:
        """The target's quantile bin."""
        edges = np.unique(np.quantile(y, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
        return np.searchsorted(edges, y, side="right")

    def forward(self, y: np.ndarray) -> np.ndarray:
        if self.transform == "log1p":
            if (y < 0).any():
                raise KitError("target.transform log1p (the RMSLE target) needs target values of 0 or more; "
                               f"the smallest is {y.min():g}")
            return np.log1p(y)
        return y

    def inverse(self, preds: np.ndarray) -> np.ndarray:
        return np.expm1(preds) if self.transform == "log1p" else preds

    def fit_scale(self, y: np.ndarray) -> dict:
        t = self.forward(y)
        return {"transform": self.transform, "mean": float(t.mean()), "std": float(t.std()) or 1.0}

    def criterion(self, state: dict, class_weights, label_smoothing: float, device):
        from kit.objective import StandardizedSquaredError

        t = state["target"]
        return StandardizedSquaredError(t["transform"], t["mean"], t["std"])

    def link(self, model, state: dict):
        from kit.ensemble import Unstandardize

        return Unstandardize(model, state["target"]["mean"], state["target"]["std"])

    def from_outputs(self, outputs: np.ndarray, state: dict) -> np.ndarray:
        t = state["target"]
        return self.inverse(outputs * t["std"] + t["mean"])

    def consumed(self, needs: str, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        return preds[:, 0]

    def answer(self, preds: np.ndarray, metric, threshold: float | None, names: list[str]) -> np.ndarray:
        return preds[:, 0]

    def oof_columns(self) -> list[str]:
        return ["value"]

    def predicted(self, preds: np.ndarray, threshold: float | None) -> np.ndarray:
        return preds[:, 0]

    def plot(self, y: np.ndarray, preds: np.ndarray, threshold: float | None, path: Path, metric: str,
             score: float) -> None:
        from kit import plots

        plots.residuals(y, preds[:, 0], path / "residuals.png", metric, score)

    def describe(self, preds: np.ndarray, threshold: float | None) -> str:
        return f"predicted values from {preds.min():.4g} to {preds.max():.4g} (median {np.median(preds):.4g})"

    def output_contract(self, column: str, how: str) -> dict:
        inverse = f", then inverted from {self.transform}(y)" if self.transform != "none" else ""
        return {"name": "probs", "dtype": "float32", "shape": ["N", 1], "values": True,
                "meaning": f"the predicted {column}: {how}{inverse}"}


class Ordinal(Regression):
    """Ordered classes scored by an ordinal metric (qwk): the learners fit each row's class index as a number (a
    regression, so predicting 3 for a 4 costs less than predicting 0), and the answer is the class between the cut
    points that the value falls in, the cut points chosen on OOF rows for the metric (cross-fitted for the CV), as
    APTOS' winners did. The export serves the value; meta.json's threshold holds the cut points."""

    name = "ordinal"
    usual_metric = "qwk"
    metric_decides = True

    @classmethod
    def claims(cls, labels: Labels) -> str | None:
        if labels.whole and 2 < labels.distinct <= MAX_CLASSES_OF_NUMBERS:
            return f"{labels.distinct} ordered whole numbers"
        return None

    @classmethod
    def accepts(cls, metric) -> bool:
        return metric.ordinal

    @classmethod
    def classes_of(cls, labels: pd.Series) -> list[str]:
        return sorted_labels(labels)

    def check_classes(self) -> None:
        if len(self.classes) < 3:
            raise KitError(f"an ordinal target needs at least three classes, got {self.classes}")

    def encode(self, labels: pd.Series) -> np.ndarray:
        """Each label's index in the ordered classes."""
        return labels.astype(str).map({name: i for i, name in enumerate(self.classes)}).to_numpy(dtype=np.int64)

    def invalid(self, labels: pd.Series) -> tuple[np.ndarray, str]:
        return ~labels.astype(str).isin(self.classes).to_numpy(), f"one of {self.classes}"

    def strata(self, y: np.ndarray) -> np.ndarray:
        return y

    def forward(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64)

    def cuts(self, threshold) -> np.ndarray:
        """The cut points between classes: the chosen ones, else halfway between the indices."""
        return np.arange(0.5, len(self.classes) - 1) if threshold is None else np.asarray(threshold)

    def labels(self, preds: np.ndarray, threshold) -> np.ndarray:
        """Class indices: how many cut points each value reaches."""
        return np.searchsorted(self.cuts(threshold), preds[:, 0], side="right")

    def consumed(self, needs: str, preds: np.ndarray, threshold) -> np.ndarray:
        return self.labels(preds, threshold)

    def tunes_threshold(self, metric) -> bool:
        return True

    def best_threshold(self, metric, y: np.ndarray, preds: np.ndarray) -> list[float]:
        """Coordinate ascent from the halfway cuts: each cut in turn moves to the best of 21 points between its
        neighbours, the others held, for three rounds."""
        cuts = self.cuts(None).astype(float)
        for _ in range(3):
            for k in range(len(cuts)):
                low = cuts[k - 1] if k else cuts[k] - 1
                high = cuts[k + 1] if k + 1 < len(cuts) else cuts[k] + 1
                grid = np.linspace(low, high, 23)[1:-1]
                scores = []
                for t in grid:
                    cuts[k] = t
                    scores.append(metric.sign * metric.score(y, preds, cuts))
                cuts[k] = grid[int(np.argmax(scores))]
        return [float(t) for t in cuts]

    def threshold_text(self, threshold) -> str:
        return f"cut points {', '.join(f'{t:.2f}' for t in threshold)}"

    # Answered as classes: the class-index methods of Classes, on this kind's labels (the cut points).
    answer, predicted, recall, describe = Classes.answer, Classes.predicted, Classes.recall, Classes.describe

    def plot(self, y: np.ndarray, preds: np.ndarray, threshold, path: Path, metric: str, score: float) -> None:
        from kit import plots

        plots.confusion(y, self.labels(preds, threshold), self.classes, path / "confusion.png")
        plots.residuals(y.astype(float), preds[:, 0], path / "residuals.png", metric, score)

    def output_contract(self, column: str, how: str) -> dict:
        return {"name": "probs", "dtype": "float32", "shape": ["N", 1], "values": True, "ordinal": True,
                "meaning": f"the {column} class's index as a number: {how}; the answer is classes[i] where i counts "
                           "the cut points in meta.json's threshold that the value reaches (null: i + 0.5)"}


TARGETS: dict[str, type[Target]] = {t.name: t for t in (Multilabel, Binary, Ordinal, Multiclass, Regression)}  # order


def target_class(name: str) -> type[Target]:
    """The kind registered as `name`."""
    if name not in TARGETS:
        raise KitError(f"unknown target type {name!r}; known types: {', '.join(TARGETS)}")
    return TARGETS[name]


def get_target(config) -> Target:
    """The resolved config's target (kind, classes, transform)."""
    return target_class(config.target.type)(config.classes, config.target.transform)


def for_classes(count: int) -> type[Target]:
    """The kind of a target given as a list of `count` class names (image folders)."""
    return Binary if count == 2 else Multiclass


def read_labels(values: pd.Series) -> Labels:
    seen = values.dropna()
    numbers = pd.to_numeric(seen, errors="coerce")
    numeric = bool(numbers.notna().all())
    distinct = int(seen.nunique())
    split = seen.astype(str).str.split()
    tags = split.explode().nunique() if (split.str.len() > 1).any() else 0
    return Labels(distinct, numeric, numeric and bool((numbers == numbers.round()).all()),
                  int(tags) if tags < distinct else 0)


def infer(values: pd.Series, metric=None, column: str = "target", kinds: list[type[Target]] | None = None
          ) -> tuple[type[Target], str]:
    """(kind, the rule that decided it) of a label column: the first kind in TARGETS (or `kinds`, those the learners
    fit) that can be scored by `metric` (any, when None) and whose rule claims the labels. `make new` and training
    use this one rule."""
    labels = read_labels(values)
    if labels.distinct < 2:
        raise KitError(f"target {column!r} has a single value ({values.dropna().iloc[0]!r}): nothing to learn")
    candidates = [t for t in kinds or TARGETS.values() if (t.accepts(metric) if metric else not t.metric_decides)]
    for kind in candidates:
        rule = kind.claims(labels)
        if rule:
            return kind, rule if metric is None or len(candidates) == len(TARGETS) else \
                f"{rule}; METRIC={metric.name} scores {' or '.join(t.name for t in candidates)}"
    others = [t.name for t in kinds or TARGETS.values() if t.claims(labels) and not t.metric_decides]
    raise KitError(f"metric {metric.name} scores {' or '.join(t.name for t in candidates)} targets, but {column!r} "
                   f"is {' or '.join(others)} ({labels.distinct} distinct values{', numbers' if labels.numeric else ''}"
                   f"); metrics that fit: {', '.join(fitting(*(TARGETS[o] for o in others)))}")


def learnable(learners: list[str]) -> list[type[Target]]:
    """The kinds that every learner in `learners` can fit (the network fits all; learners from libraries not tags)."""
    from kit.learners import get_learner

    library = any(get_learner(name).compiled for name in learners)
    return [kind for kind in TARGETS.values() if kind.library_learners or not library]


def fitting(*kinds: type[Target]) -> list[str]:
    """The metric registry's metrics that can score any of `kinds`."""
    from kit.metrics import REGISTRY

    return [name for name, m in REGISTRY.items() if any(k.accepts(m) for k in kinds)]


def sorted_labels(values: pd.Series) -> list[str]:
    """Distinct labels in order: numerically when they are all numbers (so 2 comes before 10), else as text."""
    distinct = pd.Series(values.dropna().astype(str).unique())
    numbers = pd.to_numeric(distinct, errors="coerce")
    order = np.lexsort((distinct.to_numpy(), numbers.to_numpy())) if numbers.notna().all() else np.argsort(
        distinct.to_numpy(), kind="stable")
    return distinct.to_numpy()[order].tolist()


def settle(config, labels: pd.Series):
    """The config with target.type, classes and target.transform settled from the training labels, and the metric
    checked against the type: what a run records, so predict, export and serving need no data to know them."""
    from kit.metrics import get_metric

    metric, kinds = get_metric(config.metric, None, config.root), learnable(config.learners)
    if config.target.type != "auto":
        kind, rule = target_class(config.target.type), "set in the config"
        if kind not in kinds:
            raise KitError(f"a {kind.name} target is fitted by the network only, not by {config.learners}; set "
                           "learners: [net]")
    else:
        kind, rule = infer(labels, metric, config.target.column, kinds)
    classes = list(config.classes) or kind.classes_of(labels)
    target = kind(classes, "none")
    target.check_classes()
    metric = get_metric(config.metric, target, config.root)
    transform = config.target.transform
    if transform == "auto":
        transform = metric.transform
    log.info("target %r: %s (%s), metric %s%s%s", config.target.column, kind.name, rule, metric.name,
             f", classes {classes}" + (f" ({kind.note(classes)})" if kind.note(classes) else "") if classes
             else "", f", learners fit {transform}(y)" if transform != "none" else "")
    resolved = dataclasses.replace(config.target, type=kind.name, transform=transform)
    return dataclasses.replace(config, target=resolved, classes=classes)

"""Target kinds of one class per row: `Binary` and `Multiclass`, on their shared `Classes`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.target.kind import MAX_CLASSES_OF_NUMBERS, Labels, Target


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

"""Target kinds of a number per row: `Regression`, and `Ordinal` (ordered grades fitted as a number, answered as a
class through cut points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.target.classes import Classes
from kit.target.kind import MAX_CLASSES_OF_NUMBERS, QUANTILE_BINS, Labels, Target, coordinate_ascent, sorted_labels


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
        def between_neighbours(k: int, cuts: np.ndarray) -> np.ndarray:
            low = cuts[k - 1] if k else cuts[k] - 1
            high = cuts[k + 1] if k + 1 < len(cuts) else cuts[k] + 1
            return np.linspace(low, high, 23)[1:-1]

        return coordinate_ascent(self.cuts(None).astype(float), between_neighbours,
                                 lambda cuts: metric.sign * metric.score(y, preds, cuts), rounds=3)

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

"""Target kind `multilabel`: any number of tags per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.target.kind import Labels, Target, coordinate_ascent, sorted_labels


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
        return coordinate_ascent(np.full(preds.shape[1], common), lambda k, chosen: grid,
                                 lambda chosen: metric.sign * metric.score(y, preds, chosen), rounds=2)

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

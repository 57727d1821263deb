"""What the network trains on and how its validation epochs are scored: the loss (the metric's surrogate) and the
competition's metric on the epoch's predictions. One object per fold, handed to the shared training loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kit.metrics import Metric
from kit.target import inverse


class Objective:
    """Classes: cross-entropy (optionally class-weighted and label-smoothed) on logits. Values: squared error on
    the standardised transform(y), where `scale` = (transform, mean, std) was fitted on the fold's training part."""

    def __init__(self, metric: Metric, scale: tuple[str, float, float] | None = None,
                 class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        self.metric, self.scale = metric, scale
        self.class_weights, self.label_smoothing = class_weights, label_smoothing

    @property
    def mode(self) -> str:
        """Early stopping on the metric: "max" when greater is better."""
        return "max" if self.metric.greater_is_better else "min"

    def criterion(self, device: torch.device) -> nn.Module:
        if self.scale is None:
            weight = self.class_weights.to(device) if self.class_weights is not None else None
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=self.label_smoothing)
        return StandardizedSquaredError(*self.scale)

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """The network's raw outputs as the metric's inputs: probabilities, or values in the target's units."""
        if self.scale is None:
            e = np.exp(outputs - outputs.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)
        transform, mean, std = self.scale
        return inverse(outputs * std + mean, transform)

    def score(self, outputs: np.ndarray, y: np.ndarray) -> float:
        return self.metric.score(y, self.predictions(outputs))


class StandardizedSquaredError(nn.Module):
    """Mean squared error of the network's output against (transform(y) - mean) / std: y arrives in its units."""

    def __init__(self, transform: str, mean: float, std: float):
        super().__init__()
        self.transform, self.mean, self.std = transform, float(mean), float(std)

    def forward(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.log1p(y) if self.transform == "log1p" else y
        return nn.functional.mse_loss(output[:, 0].float(), (t.float() - self.mean) / self.std)

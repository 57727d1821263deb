"""What the network trains on and how its validation epochs are scored: the loss (the metric's surrogate) and the
competition's metric on the epoch's predictions. One object per fold, handed to the shared training loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kit.metrics import Metric


class Objective:
    """The fold's target kind decides the loss and how raw outputs become predictions (kit/target/): cross-entropy
    on logits (optionally class-weighted and label-smoothed) for classes, binary cross-entropy per tag for tags,
    squared error on the standardised transform(y) for values, with the scale in the fold's preprocessing `state`."""

    def __init__(self, metric: Metric, state: dict, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0):
        self.metric, self.target, self.state = metric, metric.target, state
        self.class_weights, self.label_smoothing = class_weights, label_smoothing

    @property
    def mode(self) -> str:
        """Early stopping on the metric: "max" when greater is better."""
        return "max" if self.metric.greater_is_better else "min"

    def criterion(self, device: torch.device) -> nn.Module:
        return self.target.criterion(self.state, self.class_weights, self.label_smoothing, device)

    def predictions(self, outputs: np.ndarray) -> np.ndarray:
        """The network's raw outputs as the metric's inputs: probabilities, or values in the target's units."""
        return self.target.from_outputs(outputs, self.state)

    def score(self, outputs: np.ndarray, y: np.ndarray) -> float:
        return self.metric.score(y, self.predictions(outputs))


class WeightedCrossEntropy(nn.Module):
    """nn.CrossEntropyLoss(weight=w, label_smoothing=e)'s value, computed from per-sample weights w[y]. Torch's own
    weighted, smoothed loss divides by a sum it gathers with a data-dependent masked_select, a host sync every step
    on a GPU (twice under mixup); this stays on the device."""

    def __init__(self, weight: torch.Tensor, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight.float())
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=1)
        w = self.weight[y]
        nll = -(logp.gather(1, y[:, None])[:, 0] * w).sum()
        smooth = -(logp * self.weight).sum()  # every class's term, weighted by its class: torch's smoothing part
        e = self.label_smoothing
        return ((1 - e) * nll + e / logits.shape[1] * smooth) / w.sum()


class TagLoss(nn.Module):
    """Binary cross-entropy of each tag's logit against its 0/1 truth, averaged over tags and rows; label smoothing
    pulls each target towards 1/2 by `label_smoothing` / 2."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y.float() * (1 - self.label_smoothing) + self.label_smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


class StandardizedSquaredError(nn.Module):
    """Mean squared error of the network's output against (transform(y) - mean) / std: y arrives in its units."""

    def __init__(self, transform: str, mean: float, std: float):
        super().__init__()
        self.transform, self.mean, self.std = transform, float(mean), float(std)

    def forward(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.log1p(y) if self.transform == "log1p" else y
        return nn.functional.mse_loss(output[:, 0].float(), (t.float() - self.mean) / self.std)

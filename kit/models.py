"""Model factories: the tabular MLP (image models join here)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout blocks, then a linear head returning logits."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

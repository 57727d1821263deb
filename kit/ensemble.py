"""The servable module: what writes submission.csv is what gets exported and served."""

from __future__ import annotations

import torch
from torch import nn


class FoldEnsemble(nn.Module):
    """Mean of the members' outputs; each member (a fold model with its TTA) maps the raw batch to probabilities."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


@torch.no_grad()
def predict_proba(module: nn.Module, batches) -> torch.Tensor:
    """Run the ensemble over input batches in eval mode; returns [N, classes] probabilities."""
    module.eval()
    return torch.cat([module(x) for x in batches])

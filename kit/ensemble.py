"""The servable module: what writes submission.csv is what gets exported and served."""

from __future__ import annotations

import torch
from torch import nn


class FoldEnsemble(nn.Module):
    """Mean of the members' outputs; each member (a fold model with its TTA) maps the raw batch to probabilities.
    The members run back to back on the same input batch, wherever it lives."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def view(x: torch.Tensor, name: str) -> torch.Tensor:
    """One test-time view of an NHWC image batch, as tensor operations (so exports carry them). Every view keeps
    the batch's shape, so all views of a batch can go through the model in one call."""
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(2)
    if name == "vflip":
        return x.flip(1)
    if name in ("zoom", "zoom_hflip"):
        # Centre crop of 7/8 of each side, resized back up: the object seen a little closer.
        h, w = x.shape[1], x.shape[2]
        dh, dw = h // 16, w // 16
        crop = x[:, dh : h - dh, dw : w - dw, :].permute(0, 3, 1, 2).float()
        zoomed = nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        zoomed = zoomed.permute(0, 2, 3, 1)
        return zoomed.flip(2) if name == "zoom_hflip" else zoomed
    raise ValueError(f"unknown TTA view {name!r}")


def tta_passes(views: list[str], blend: float) -> list[str]:
    """The views a TTA model call runs: the plain view for the blend rides along unless it is one of them already."""
    return list(views) + (["identity"] if blend > 0 and "identity" not in views else [])


class TTA(nn.Module):
    """A fold model under test-time augmentation: the mean of its outputs over the views (the model is the network
    under its target's link: class or tag probabilities, or values), optionally blended with the plain view's. All
    views of a batch run as one model call of len(views) x N images."""

    def __init__(self, model: nn.Module, views: list[str], blend: float = 0.0):
        super().__init__()
        self.model, self.views, self.blend = model, list(views), float(blend)
        self.passes = tta_passes(self.views, self.blend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float before concatenating: flips stay uint8, zooms are float; the model casts to float anyway.
        stacked = torch.cat([view(x, v).float() for v in self.passes])
        out = self.model(stacked).float()
        probs = out.reshape(len(self.passes), -1, out.shape[-1])
        mean = probs[: len(self.views)].mean(0)
        if self.blend > 0:
            return (1 - self.blend) * mean + self.blend * probs[self.passes.index("identity")]
        return mean


class Blend(nn.Module):
    """A fold's learners (each: raw batch -> probabilities) weighted into one answer; a learner of weight 0 is left
    out (exactly: its term was 0). Without weights it returns every learner's probabilities, [N, learners, classes],
    for the out-of-fold predictions that fit the weights."""

    def __init__(self, learners: dict[str, nn.Module], weights: list[float] | None):
        super().__init__()
        if weights is not None:  # a learner the weights give nothing is not served: its time would buy nothing
            learners = {name: m for (name, m), w in zip(learners.items(), weights, strict=True) if w != 0}
            weights = [w for w in weights if w != 0]
        self.learners = nn.ModuleDict(learners)
        self.register_buffer("weights", None if weights is None else torch.tensor(weights, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([learner(x) for learner in self.learners.values()], dim=1)
        if self.weights is None:
            return probs
        return (probs * self.weights[:, None]).sum(1)


class Softmax(nn.Module):
    """The network's logits as probabilities, like the other learners' outputs (in float32, under autocast too)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)


class Sigmoid(nn.Module):
    """The network's logits as independent per-tag probabilities (a multilabel target), in float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x).float())


class Unstandardize(nn.Module):
    """The regression network's standardised output back in transform(y) units."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.std + self.mean


class TargetInverse(nn.Module):
    """The served ensemble's regression answer back in the target's own units (kit/target/'s inverse); for
    classification and untransformed values, the ensemble unchanged."""

    def __init__(self, ensemble: nn.Module, transform: str = "none"):
        super().__init__()
        self.ensemble, self.transform = ensemble, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ensemble(x)
        return torch.exp(out) - 1 if self.transform == "log1p" else out  # expm1 has no ONNX operator

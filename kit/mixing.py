"""Mixup and CutMix on a batch: the loss becomes lam * CE(y_a) + (1 - lam) * CE(y_b)."""

from __future__ import annotations

import numpy as np
import torch

from kit.augment import uniform


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Return mixed inputs, both label sets and the weight of the first; with both on, pick one per batch.

    Every draw comes from `rng` on the host (the trainer seeds it per (seed, epoch, step)), so nothing waits
    for the device and loader workers cannot shift the draws.
    """
    use_cutmix = cutmix > 0 and x.dim() == 4 and (mixup <= 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0
    # Partners: a permutation made on the device from hashed keys (no host-to-device copy in the step).
    perm = uniform(int(rng.integers(2**32)), torch.arange(len(x), device=x.device), 1)[:, 0].argsort()
    x = x.float()
    if use_cutmix:  # NHWC: paste a box of the partner image, then use the box's true area for lam
        h, w = x.shape[1], x.shape[2]
        cut = (1 - lam) ** 0.5
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, y0:y1, x0:x1, :] = x[perm, y0:y1, x0:x1, :]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, y, y[perm], lam

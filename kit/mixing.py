"""Mixup and CutMix on a batch: the loss becomes lam * CE(y_a) + (1 - lam) * CE(y_b)."""

from __future__ import annotations

import torch


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Return mixed inputs, both label sets and the weight of the first; with both on, pick one per batch."""
    use_cutmix = cutmix > 0 and x.dim() == 4 and (mixup <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    x = x.float()
    if use_cutmix:  # NHWC: paste a box of the partner image, then use the box's true area for lam
        h, w = x.shape[1], x.shape[2]
        cut = (1 - lam) ** 0.5
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = (int(torch.randint(0, n, (1,), generator=generator)) for n in (h, w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, y0:y1, x0:x1, :] = x[perm, y0:y1, x0:x1, :]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, y, y[perm], lam

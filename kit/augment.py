"""Batched image augmentation as tensor code, on whatever device holds the batch (the GPU when training there).

Every sample's random parameters come from a counter-based hash of (epoch key, sample index, parameter), so
a sample is augmented the same way whatever batch, worker, rank or device it lands in, and a resumed epoch
draws what the interrupted one drew. One affine resampling does the random resized crop, the flips and the
rotation; colour jitter follows on the crop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kit.config import AugmentConfig

M32 = 0xFFFFFFFF
# One stream per random parameter, so adding a parameter never shifts the others' draws.
AREA, RATIO, CX, CY, HFLIP, VFLIP, ROTATE_ON, ANGLE, JITTER_ON, BRIGHT, CONTRAST, SATUR, HUE, STREAMS = range(14)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 32-bit values in int64 tensors, in 16-bit halves so no product overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer with full avalanche (Wellons' lowbias32), identical on every device."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform(key: int, index: torch.Tensor, streams: int) -> torch.Tensor:
    """U[0, 1) float32 [len(index), streams]: column s is a pure function of (key, index, s). All streams in one
    pass of ~30 element-wise kernels, so a batch's draws cost the host a few launches, not hundreds."""
    stream = torch.arange(streams, device=index.device) * 0x9E3779B9 & M32
    h = _hash32(_hash32(index.long()[:, None] ^ (key & M32)) ^ stream)
    return (h >> 8).float() * (1.0 / (1 << 24))


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def crop_matrices(cfg: AugmentConfig, u: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] affine_grid matrices from the draws `u`: output square -> a random crop of the source, flipped
    and rotated."""
    u = u.unbind(1)
    area = _between(u[AREA], *cfg.scale)
    ratio = torch.exp(_between(u[RATIO], math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width and height as fractions of the source side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * u[CX] - 1) * (1 - w)  # crop centre in affine_grid's [-1, 1] coordinates, crop inside the image
    cy = (2 * u[CY] - 1) * (1 - h)
    fx = torch.where(u[HFLIP] < cfg.hflip, -1.0, 1.0)
    fy = torch.where(u[VFLIP] < cfg.vflip, -1.0, 1.0)
    angle = torch.where(u[ROTATE_ON] < 0.5, _between(u[ANGLE], -cfg.rotate, cfg.rotate), 0.0) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    row0 = torch.stack([w * fx * cos, -w * fy * sin, cx], dim=1)
    row1 = torch.stack([h * fx * sin, h * fy * cos, cy], dim=1)
    return torch.stack([row0, row1], dim=1)


def crop(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC [B, S, S, 3] -> float NCHW [B, 3, size, size] sampled bilinearly through `theta`."""
    x = images.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, u: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue on float NCHW in 0..255, each sample with probability 0.8."""
    j = cfg.color_jitter
    on = u[:, JITTER_ON] < 0.8

    def factor(stream: int, low: float, high: float, identity: float) -> torch.Tensor:
        return torch.where(on, _between(u[:, stream], low, high), identity).view(-1, 1, 1, 1)

    x = (x * factor(BRIGHT, 1 - j, 1 + j, 1.0)).clamp(0, 255)
    mean = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * factor(CONTRAST, 1 - j, 1 + j, 1.0) + mean).clamp(0, 255)
    gray = _gray(x)
    x = ((x - gray) * factor(SATUR, 1 - j, 1 + j, 1.0) + gray).clamp(0, 255)
    if cfg.hue > 0:
        x = hue_shift(x, factor(HUE, -cfg.hue, cfg.hue, 0.0).view(-1))
    return x


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_YIQ)


def hue_shift(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by `turns` (fractions of the colour circle) in YIQ space. The colour matrices
    enter as Python numbers: a constant tensor would be a host-to-device copy on every batch."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y, i, q = (w0 * r + w1 * g + w2 * b for w0, w1, w2 in _YIQ.tolist())
    cos, sin = torch.cos(2 * math.pi * turns).view(-1, 1, 1, 1), torch.sin(2 * math.pi * turns).view(-1, 1, 1, 1)
    i, q = cos * i - sin * q, sin * i + cos * q
    return torch.cat([w0 * y + w1 * i + w2 * q for w0, w1, w2 in _YIQ_TO_RGB.tolist()], dim=1).clamp(0, 255)


def augment(images: torch.Tensor, index: torch.Tensor, cfg: AugmentConfig, key: int, size: int) -> torch.Tensor:
    """The training augmentation of a uint8 NHWC batch: float NHWC [B, size, size, 3] in 0..255, channels-last
    memory (what the model's NHWC -> NCHW permute turns into the fast convolution layout)."""
    u = uniform(key, index.to(images.device), STREAMS)
    x = crop(images, crop_matrices(cfg, u), size)
    if cfg.color_jitter > 0:
        x = color_jitter(x, cfg, u)
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Whole images (uint8 NHWC) resized to `size` (validation at the crop size); float NHWC, channels-last."""
    x = images.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)

"""What the training loop iterates: batches already on the training device, reshuffled every epoch.

Two sources share one order: `DatasetBatches` runs a torch Dataset through a DataLoader (tabular rows, and
images augmented per sample by albumentations in CPU workers); `DeviceImages` keeps the uint8 image cache on
the device (or in pinned host memory) and augments whole batches there. The order and every random draw
derive from (seed, epoch, sample index), never from which worker, rank or batch a sample lands in.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kit import augment
from kit.config import AugmentConfig
from kit.distributed import SINGLE, Dist
from kit.errors import KitError

log = logging.getLogger(__name__)

SHUFFLE, AUGMENT = 1, 2  # streams of derived seeds; the trainer owns the others


class Batches(Protocol):
    """One epoch of (input, label) batches on the training device; `set_epoch` fixes the epoch's order and draws."""

    unit: str  # what a sample is, for the epoch line: img, rows

    def set_epoch(self, seed: int, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def derive(*keys: int) -> int:
    """A 32-bit seed that is a pure function of `keys` (e.g. seed, epoch, stream)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, dist: Dist,
                limit: int = 0) -> list[np.ndarray]:
    """This rank's batches of sample indices for one epoch.

    Training (`shuffle`): one permutation per (seed, epoch), its first `limit` samples if given (a fresh subset each
    epoch), cut to whole global batches when there is more than one (BatchNorm cannot train on a ragged batch of
    one), dealt out rank by rank. Evaluation: every sample once, in order, rank r taking r, r + world, ...
    """
    if not shuffle:
        mine = np.arange(dist.rank, n, dist.world)
        return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive(seed, epoch, SHUFFLE))).numpy()
    if 0 < limit < n:
        order, n = order[:limit], limit
    if n > batch_size:
        order = order[: n - n % batch_size]
    if batch_size % dist.world:  # a shrunk global batch would silently change the recipe
        fit = max(dist.world, batch_size // dist.world * dist.world)
        raise KitError(f"train.batch_size {batch_size} does not divide among {dist.world} processes; the global batch "
                       f"is shared evenly: use a multiple of {dist.world}, e.g. SET=\"train.batch_size={fit}\"")
    local = batch_size // dist.world
    order = order[: len(order) - len(order) % dist.world][dist.rank :: dist.world]
    return [order[i : i + local] for i in range(0, len(order), local)]


class DatasetBatches:
    """A torch Dataset through one DataLoader (persistent workers, pinned memory on CUDA). Items are fetched as
    (augmentation key, index) pairs when the dataset is augmented, so workers need no per-epoch state."""

    unit = "img"  # what a sample is, for the epoch line

    def __init__(self, data: Dataset, batch_size: int, device: torch.device, shuffle: bool, workers: int,
                 dist: Dist = SINGLE):
        self.data, self.batch_size, self.device, self.shuffle, self.dist = data, batch_size, device, shuffle, dist
        self.seed, self.epoch = 0, 0
        # Its own generator: starting an epoch's iterator must not consume the global RNG that dropout uses.
        self.loader = DataLoader(data, batch_sampler=_EpochSampler(self), num_workers=workers,
                                 pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                 generator=torch.Generator().manual_seed(0))

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def order(self) -> list[list]:
        key = derive(self.seed, self.epoch, AUGMENT)
        keyed = getattr(self.data, "keyed", False)
        return [[(key, int(i)) if keyed else int(i) for i in batch]
                for batch in epoch_order(len(self.data), self.batch_size, self.seed, self.epoch, self.shuffle,
                                         self.dist)]

    def __len__(self) -> int:
        return len(self.order())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _EpochSampler:
    """The DataLoader's batch sampler: asks its owner for the current epoch's batches (in the main process)."""

    def __init__(self, owner: DatasetBatches):
        self.owner = owner

    def __iter__(self) -> Iterator[list]:
        return iter(self.owner.order())

    def __len__(self) -> int:
        return len(self.owner.order())


class TensorBatches:
    """Table rows already in memory as tensors on the training device: a batch is one indexing of them, in the order
    `epoch_order` deals (the same batches a DataLoader over the rows would give, without a Python call per row)."""

    unit = "rows"  # what a sample is, for the epoch line

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device, shuffle: bool,
                 dist: Dist = SINGLE, epoch_rows: int = 0):
        self.x, self.y, self.device = x.to(device), y.to(device), device
        self.batch_size, self.shuffle, self.dist, self.epoch_rows = batch_size, shuffle, dist, epoch_rows
        self.seed, self.epoch = 0, 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def _order(self) -> list[np.ndarray]:
        return epoch_order(len(self.y), self.batch_size, self.seed, self.epoch, self.shuffle, self.dist,
                           self.epoch_rows)

    def __len__(self) -> int:
        return len(self._order())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self._order():
            index = torch.from_numpy(batch).to(self.device)
            yield self.x[index], self.y[index]


class DeviceImages:
    """The uint8 NHWC images of a fold on the training device when `place` finds room (cache_fits), else in
    pinned host memory, copied a whole batch at a time; augmented (or resized) per batch there."""

    unit = "img"  # what a sample is, for the epoch line

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device, size: int,
                 augment_cfg: AugmentConfig | None, share: float = 0.5, dist: Dist = SINGLE):
        self.device, self.size, self.cfg, self.dist, self.batch_size = device, size, augment_cfg, dist, batch_size
        self.images = place(np.require(images, requirements=["C", "W"]), device, share)  # a writable copy
        labels = np.asarray(labels)  # class indices, or values (a regression)
        self.labels = torch.as_tensor(labels, dtype=torch.long if labels.dtype.kind in "iu" else torch.float32,
                                      device=device)
        self.seed, self.epoch = 0, 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def _order(self) -> list[np.ndarray]:
        return epoch_order(len(self.labels), self.batch_size, self.seed, self.epoch, self.cfg is not None, self.dist)

    def __len__(self) -> int:
        return len(self._order())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        key = derive(self.seed, self.epoch, AUGMENT)
        order = self._order()
        if not order:
            return
        flat = torch.from_numpy(np.concatenate(order))
        pinned = flat.pin_memory() if self.device.type == "cuda" else flat
        on_device = pinned.to(self.device, non_blocking=True)  # the epoch's indices in one copy, not one per step
        start = 0
        for batch in order:
            index, device_index = flat[start : start + len(batch)], on_device[start : start + len(batch)]
            start += len(batch)
            yield self._images(index, device_index, key), self.labels[device_index]

    def _images(self, index: torch.Tensor, device_index: torch.Tensor, key: int) -> torch.Tensor:
        if self.images.device.type == self.device.type:  # resident (cuda vs cuda:0 are the same place here)
            x = self.images[device_index]
        else:  # gather on the host into pinned memory, copy without blocking the host
            x = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8,
                            pin_memory=self.device.type == "cuda")
            torch.index_select(self.images, 0, index, out=x)
            x = x.to(self.device, non_blocking=True)
        if self.cfg is not None:
            return augment.augment(x, device_index, self.cfg, key, self.size)
        return augment.resize(x, self.size)


HEADROOM = 0.25  # of the GPU's memory always left to the model, its optimizer state and a batch's activations
_resident: dict[str, int] = {}  # bytes of image caches now on each GPU (train and valid together)


def place(images: np.ndarray, device: torch.device, share: float) -> torch.Tensor:
    """The image array as a tensor on `device` when cache_fits(), else on the host (pinned, when the device is a
    GPU); the log says which and why."""
    tensor = torch.from_numpy(images)
    if device.type != "cuda":
        return tensor
    free, total = torch.cuda.mem_get_info(device)
    usable = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # torch's cached blocks
    key = str(torch.device(device.type, device.index if device.index is not None else torch.cuda.current_device()))
    fits, why = cache_fits(tensor.nbytes, usable, total, _resident.get(key, 0), share)
    log.info("image cache %.2f GB %s: %s", tensor.nbytes / 1e9,
             "on the GPU" if fits else "in pinned host memory, copied per batch", why)
    if not fits:
        return tensor.pin_memory()
    tensor = tensor.to(device)
    _resident[key] = _resident.get(key, 0) + tensor.nbytes
    weakref.finalize(tensor, _release, key, tensor.nbytes)
    return tensor


def _release(key: str, nbytes: int) -> None:
    _resident[key] -= nbytes


def cache_fits(nbytes: int, usable: int, total: int, resident: int, share: float) -> tuple[bool, str]:
    """Whether a cache of `nbytes` may live on a GPU of `total` bytes, where `usable` are free to this process
    (PyTorch's cached blocks included) and `resident` are held by earlier caches: all caches together within
    `share` of the total, and HEADROOM of the total left over for the model and its batches; the reason."""
    gb = 1e9
    if resident + nbytes > share * total:
        return False, (f"with the {resident / gb:.2f} GB already cached it would pass image.device_cache = "
                       f"{share:g} of the GPU's {total / gb:.1f} GB")
    if usable - nbytes < HEADROOM * total:
        return False, (f"only {usable / gb:.1f} GB are free and {HEADROOM:.0%} of the GPU's {total / gb:.1f} GB stay "
                       "for the model and its batches")
    return True, (f"{(resident + nbytes) / gb:.2f} GB of caches within image.device_cache = {share:g} of "
                  f"{total / gb:.1f} GB, {(usable - nbytes) / gb:.1f} GB left for the model and its batches")

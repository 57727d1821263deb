"""One fold of training: AdamW, warm-up + cosine schedule, gradient clipping, early stopping, best weights,
per-epoch resume checkpoints, and data-parallel training under torchrun."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from kit import atomic
from kit.config import TrainConfig
from kit.distributed import SINGLE, Dist
from kit.errors import KitError
from kit.mixing import mix_batch

log = logging.getLogger(__name__)


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without an improvement larger than `min_delta`."""

    patience: int
    min_delta: float = 0.0
    mode: str = "max"
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to zero, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch (and rank): every random draw of an epoch derives from it, so a resumed
    epoch draws exactly what the interrupted one did, whatever ran before it."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """DataLoader workers: seed Python and NumPy from the worker's torch seed (set by the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def fit(
    model: nn.Module,
    train_data: Dataset,
    valid_data: Dataset,
    cfg: TrainConfig,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    desc: str = "train",
    class_weights: torch.Tensor | None = None,
    checkpoint: Path | None = None,
    dist: Dist = SINGLE,
) -> FitResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch.

    With `checkpoint`, the whole training state is written there atomically after every epoch, and training
    continues from it when it exists. With a `dist` of several ranks, training is data-parallel: each rank
    trains on its shard of every epoch with `cfg.batch_size / ranks` per step and the metrics are summed.
    """
    device = next(model.parameters()).device
    amp_dtype = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator()
    batch_size = max(1, cfg.batch_size // dist.world)
    sampler = None
    if dist.world > 1:
        sampler = DistributedSampler(train_data, dist.world, dist.rank, seed=seed, drop_last=True)
    # BatchNorm cannot train on a final batch of one, so drop the ragged tail when there is more than a batch.
    train_loader = DataLoader(
        train_data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
        drop_last=len(train_data) > cfg.batch_size, num_workers=cfg.num_workers, worker_init_fn=seed_worker,
    )
    if dist.world > 1:
        valid_data = Subset(valid_data, range(dist.rank, len(valid_data), dist.world))
    valid_loader = DataLoader(valid_data, batch_size=batch_size * 2, num_workers=cfg.num_workers,
                              worker_init_fn=seed_worker)
    net = model
    if dist.world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(train_loader)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    weight = class_weights.to(device) if class_weights is not None else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    stopper = EarlyStopping(cfg.patience, cfg.min_delta, "max" if cfg.monitor == "accuracy" else "min")
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict] = []
    saved = dist.from_main(lambda: load_checkpoint(checkpoint)) if checkpoint else None
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        stopper = EarlyStopping(**saved["stopper"])
        best_state, history = saved["best_state"], saved["history"]
        log.info("%s: resuming after epoch %d (best so far: epoch %d)", desc, saved["epoch"], stopper.best_epoch)
    bar = tqdm(range(len(history) + 1, cfg.epochs + 1), desc=desc, leave=False, unit="epoch", disable=None)
    for epoch in bar:
        if stopper.should_stop:  # resumed from the checkpoint of the epoch that stopped early
            break
        start = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, dist.rank))  # dropout, drop-path, mixing weights
        generator.manual_seed(epoch_seed(seed, epoch))  # shuffling, loader workers, mixing partners
        if sampler is not None:
            sampler.set_epoch(epoch)
        if hasattr(train_data, "reseed"):  # per-sample augmentation seeds
            train_data.reseed(epoch_seed(seed, epoch))
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                if cfg.mixup > 0 or cfg.cutmix > 0:
                    x, y_a, y_b, lam = mix_batch(x, y, cfg.mixup, cfg.cutmix, generator)
                    logits = net(x)
                    loss = lam * criterion(logits, y_a) + (1 - lam) * criterion(logits, y_b)
                else:
                    logits = net(x)
                    loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        total_loss, correct, seen = dist.all_sum([total_loss, correct, seen])
        dist.sync_buffers(model)
        valid_loss, valid_acc = evaluate(model, valid_loader, criterion, amp_dtype, dist)
        row = {
            "epoch": epoch,
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "valid_loss": valid_loss,
            "valid_accuracy": valid_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        if stopper.step(valid_acc if cfg.monitor == "accuracy" else valid_loss, epoch):
            best_state = copy.deepcopy(model.state_dict())
        row["best"] = stopper.best_epoch == epoch
        history.append(row)
        if checkpoint and dist.main:
            save_checkpoint(checkpoint, {
                "epoch": epoch, "model": model.state_dict(), "best_state": best_state,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "stopper": asdict(stopper), "history": history,
            })
        bar.set_postfix(loss=f"{valid_loss:.4f}", acc=f"{valid_acc:.4f}")
        log.info(
            "%s epoch %d/%d  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  lr %.2e  %.1fs%s",
            desc, epoch, cfg.epochs, row["train_loss"], row["train_accuracy"], valid_loss, valid_acc,
            row["lr"], row["seconds"], "  *" if row["best"] else "",
        )
        if on_epoch:
            on_epoch(row)
        if stopper.should_stop:
            log.info("%s early stop at epoch %d; best epoch %d", desc, epoch, stopper.best_epoch)
            break
    bar.close()
    model.load_state_dict(best_state)
    return FitResult(stopper.best_epoch, float(stopper.best), len(history), history)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a Python file, so a full disk raises OSError


def load_checkpoint(path: Path) -> dict | None:
    """The training state saved at the end of an epoch, or None when there is none yet."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise KitError(f"cannot read resume checkpoint {path}: {exc}; delete it to restart this fold") from None


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for `train.amp` on `device`; None means plain fp32."""
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if amp == "fp16" else torch.bfloat16


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, amp_dtype: torch.dtype | None = None,
    dist: Dist = SINGLE,
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` over `loader` (summed over the ranks' shards)."""
    device = next(model.parameters()).device
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).float()
        total_loss += criterion(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    total_loss, correct, seen = dist.all_sum([total_loss, correct, seen])
    return total_loss / max(seen, 1), correct / max(seen, 1)

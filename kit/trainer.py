"""One fold of training: AdamW, warm-up + cosine schedule, gradient clipping, early stopping, best weights,
per-epoch resume checkpoints, and data-parallel training under torchrun.

The loop never waits on the host inside an epoch: the loss accumulates on the device and is read once per epoch,
so on a GPU the host runs ahead queueing work while the device computes. Validation scores each epoch by the
competition's metric (kit/objective.py).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from kit import atomic
from kit.batches import derive
from kit.config import TrainConfig
from kit.distributed import SINGLE, Dist
from kit.errors import KitError
from kit.metrics import get_metric
from kit.mixing import mix_batch
from kit.objective import Objective
from kit.target import Multiclass

log = logging.getLogger(__name__)

MIX, TORCH = 3, 4  # streams of derived seeds (kit/batches.py owns shuffling and augmentation)
# Test-only: "fold 1:3" kills the process (SIGKILL) as soon as the checkpoint of fold 1's epoch 3 is on disk, so
# tests interrupt a run at a known point instead of racing it ("3" alone: whichever fit reaches epoch 3 first).
KILL_AFTER_EPOCH = "KIT_TEST_KILL_AFTER_EPOCH"


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without an improvement larger than `min_delta`, counted only after
    `min_epochs`. A non-finite value is never an improvement."""

    patience: int
    min_delta: float = 0.0
    mode: str = "max"
    min_epochs: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        sign = 1.0 if self.mode == "max" else -1.0
        if math.isfinite(value) and (self.best is None or sign * (value - self.best) > self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        if epoch > self.min_epochs:
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


class TrainState:
    """Everything a resumed fold needs, behind state_dict/load_state_dict: weights, optimizer, LR schedule,
    AMP scaler, early stopping, the best weights so far and the epoch history."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, dist: Dist = SINGLE,
                 metric_mode: str = "max"):
        device = next(model.parameters()).device
        self.model, self.device = model, device
        self.amp_dtype = autocast_dtype(cfg.amp, device)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=device.type == "cuda")
        self.scheduler = warmup_cosine(self.optimizer, round(cfg.warmup_epochs * steps_per_epoch),
                                       cfg.epochs * steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        monitor = metric_mode if cfg.monitor == "metric" else "min"
        self.stopper = EarlyStopping(cfg.patience, cfg.min_delta, monitor, cfg.min_epochs)
        self.best_state = copy.deepcopy(model.state_dict())
        self.history: list[dict] = []
        self.unit = "img"  # what a training sample is, for the epoch line: images, or table rows
        net = model
        if dist.world > 1:
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = torch.compile(net) if cfg.compile else net  # what the training steps call

    @property
    def epoch(self) -> int:
        """Epochs finished so far."""
        return len(self.history)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "best_state": self.best_state,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "stopper": asdict(self.stopper), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.stopper = EarlyStopping(**state["stopper"])
        self.best_state = {k: v.to(self.device) for k, v in state["best_state"].items()}
        self.history = state["history"]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)


def train_epoch(state: TrainState, batches: Iterable, criterion: nn.Module, cfg: TrainConfig, seed: int,
                epoch: int) -> tuple[torch.Tensor, int]:
    """One pass of training steps over `batches`; returns the summed loss on the device and the number of
    samples. Nothing in here waits for the device."""
    state.model.train()
    loss_sum = torch.zeros((), device=state.device)
    seen = 0
    for step, (x, y) in enumerate(batches):
        with state.autocast():
            if cfg.mixup > 0 or cfg.cutmix > 0:  # partners and weights from (seed, epoch, step): no worker draws
                rng = np.random.default_rng([seed, epoch, MIX, step])
                x, y_a, y_b, lam = mix_batch(x, y, cfg.mixup, cfg.cutmix, rng)
                logits = state.net(x)
                loss = lam * criterion(logits, y_a) + (1 - lam) * criterion(logits, y_b)
            else:
                logits = state.net(x)
                loss = criterion(logits, y)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(state.trainable, cfg.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        loss_sum += loss.detach().float() * len(y)
        seen += len(y)
    return loss_sum, seen


def fit(model: nn.Module, train, valid, cfg: TrainConfig, seed: int, objective: Objective | None = None,
        on_epoch: Callable[[dict], None] | None = None, desc: str = "train", checkpoint: Path | None = None,
        dist: Dist = SINGLE, valid_name: str = "valid", deadline=None) -> FitResult:
    """Train `model` in place on `train` batches (kit/batches.py) for `objective`'s loss, scoring `valid` every
    epoch by its metric; on return it holds the weights of the best validation epoch (train.monitor: the metric or
    the loss; default: cross-entropy scored by accuracy). `valid_name` labels the validation numbers in the log.

    With `checkpoint`, the TrainState is written there atomically after every epoch, and training continues
    from it when it exists. Under torchrun each rank iterates its shard and the metrics are summed. With a
    `deadline` (a budget's, kit/budget.py) no epoch starts that the last one's time says would end past it.
    """
    objective = objective or Objective(get_metric("accuracy", Multiclass()), {})  # classes scored by accuracy
    state = TrainState(model, cfg, len(train), dist, objective.mode)
    state.unit = train.unit
    criterion = objective.criterion(state.device)
    saved = dist.from_main(lambda: load_checkpoint(checkpoint)) if checkpoint else None
    writer = CheckpointWriter(checkpoint) if checkpoint and dist.main else None
    if saved:
        state.load_state_dict(saved)
        log.info("%s: resuming after epoch %d (best so far: epoch %d)", desc, saved["epoch"], state.stopper.best_epoch)
    bar = tqdm(range(state.epoch + 1, cfg.epochs + 1), desc=desc, leave=False, unit="epoch", disable=None)
    try:
        train_epochs(state, bar, train, valid, (criterion, objective), cfg, seed, desc, on_epoch, writer, dist,
                     valid_name, deadline)
    finally:
        bar.close()
        if writer:
            writer.close()  # the last checkpoint is on disk (or its error raised) before the fold is saved
    model.load_state_dict(state.best_state)
    return FitResult(state.stopper.best_epoch, float(state.stopper.best), state.epoch, state.history)


def train_epochs(state: TrainState, bar: tqdm, train, valid, losses: tuple[nn.Module, Objective], cfg: TrainConfig,
                 seed: int, desc: str, on_epoch: Callable[[dict], None] | None, writer: CheckpointWriter | None,
                 dist: Dist, valid_name: str = "valid", deadline=None) -> None:
    """The epoch loop of `fit`: train, checkpoint, report, and stop early, on a non-finite loss or at the end."""
    for epoch in bar:
        if state.stopper.should_stop:  # resumed from the checkpoint of the epoch that stopped early
            break
        row = run_epoch(state, train, valid, losses, cfg, seed, epoch, dist)
        if writer:
            writer.save(state.state_dict())
        if _kill_point(desc, epoch):
            if writer:
                writer.wait()  # the checkpoint is on disk, as after any finished epoch of a real kill
            os.kill(os.getpid(), signal.SIGKILL)
        bar.set_postfix(loss=f"{row['valid_loss']:.4f}", **{losses[1].metric.name: f"{row['valid_score']:.4f}"})
        log_epoch(desc, cfg.epochs, row, f"{valid_name} loss %.4f {losses[1].metric.name}", state.unit)
        if on_epoch:
            on_epoch(row)
        if not row["finite"]:
            if state.stopper.best_epoch < 0:
                raise KitError(f"{desc} diverged in epoch {epoch} (loss {row['train_loss']}); lower train.lr or "
                               "set train.grad_clip, then train again")
            log.warning("%s: loss is not finite in epoch %d; stopping, best epoch %d", desc, epoch,
                        state.stopper.best_epoch)
            break
        if state.stopper.should_stop:
            log.info("%s early stop at epoch %d; best epoch %d", desc, epoch, state.stopper.best_epoch)
            break
        if deadline and epoch < cfg.epochs and deadline.passed(row["seconds"]):
            log.info("%s: another epoch would end past its share of the budget; stopping at epoch %d, best epoch %d",
                     desc, epoch, state.stopper.best_epoch)
            break


def run_epoch(state: TrainState, train, valid, losses: tuple[nn.Module, Objective], cfg: TrainConfig, seed: int,
              epoch: int, dist: Dist) -> dict:
    """Train and validate one epoch, update early stopping and the best weights; the epoch's history row."""
    criterion, objective = losses
    start = time.perf_counter()
    torch.manual_seed(derive(seed, epoch, TORCH, dist.rank))  # dropout and drop-path
    train.set_epoch(seed, epoch)
    loss_sum, seen = train_epoch(state, train, criterion, cfg, seed, epoch)
    total_loss, seen = dist.all_sum([loss_sum.item(), seen])  # the epoch's one host sync
    train_seconds = time.perf_counter() - start
    dist.sync_buffers(state.model)
    valid_loss, valid_score = evaluate(state.model, valid, criterion, objective, state.amp_dtype, dist)
    train_loss = total_loss / max(seen, 1)
    finite = math.isfinite(train_loss) and math.isfinite(valid_loss) and math.isfinite(valid_score)
    value = (valid_score if cfg.monitor == "metric" else valid_loss) if finite else math.nan
    row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_score": valid_score,
           "lr": state.optimizer.param_groups[0]["lr"],
           "images_per_second": seen / max(train_seconds, 1e-9), "train_images": int(seen),  # over all ranks
           "train_seconds": train_seconds,
           "seconds": time.perf_counter() - start, "finite": finite}
    if state.stopper.step(value, epoch):
        state.best_state = copy.deepcopy(state.model.state_dict())
    row["best"] = state.stopper.best_epoch == epoch
    state.history.append(row)
    return row


def _kill_point(desc: str, epoch: int) -> bool:
    """True after the epoch that KIT_TEST_KILL_AFTER_EPOCH names ("fold 1:3" or "3"; tests only)."""
    target = os.environ.get(KILL_AFTER_EPOCH)
    if not target:
        return False
    where, _, number = target.rpartition(":")
    return number.strip() == str(epoch) and where.strip() in ("", desc)


def log_epoch(desc: str, epochs: int, row: dict, valid: str = "valid loss %.4f score", unit: str = "img") -> None:
    """The epoch line; `valid` is the validation part's format (its name and the metric's), `unit` what was counted."""
    log.info(f"%s epoch %d/%d  train loss %.4f  {valid} %.4f  lr %.2e  %.0f {unit}/s  %.1fs%s",
             desc, row["epoch"], epochs, row["train_loss"], row["valid_loss"], row["valid_score"], row["lr"],
             row["images_per_second"], row["seconds"], "  *" if row["best"] else "")


class CheckpointWriter:
    """Writes resume checkpoints in a background thread while the next epoch trains (a GPU epoch can take less
    time than writing the state to disk), one at a time; a write's error is raised by the next save or close."""

    def __init__(self, path: Path):
        self.path, self.pool, self.pending = path, ThreadPoolExecutor(1, thread_name_prefix="kit-checkpoint"), None

    def save(self, state: dict) -> None:
        self.wait()
        snapshot = _to_cpu(state)  # a copy now: training goes on changing the tensors in place
        self.pending = self.pool.submit(atomic.save_torch, snapshot, self.path)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return copy.deepcopy(value)


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
def evaluate(model: nn.Module, batches: Iterable, criterion: nn.Module, objective: Objective,
             amp_dtype: torch.dtype | None = None, dist: Dist = SINGLE) -> tuple[float, float]:
    """Mean loss and the metric of `model` over `batches` (every rank's shard); the outputs are read once."""
    device = next(model.parameters()).device
    model.eval()
    loss_sum = torch.zeros((), device=device)
    outputs, labels, seen = [], [], 0
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).float()
        loss_sum += criterion(logits, y) * len(y)
        outputs.append(logits)
        labels.append(y)
        seen += len(y)
    total_loss, seen = dist.all_sum([loss_sum.item(), seen])
    out = dist.all_concat(torch.cat(outputs).cpu().numpy())
    truth = dist.all_concat(torch.cat(labels).cpu().numpy())
    return total_loss / max(seen, 1), objective.score(out.astype(np.float64), truth)

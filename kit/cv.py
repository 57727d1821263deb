"""Cross-validation: stratified folds, one training run per fold, out-of-fold predictions, the CV score."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from kit import atomic, distributed, plots, runs
from kit.config import Config, to_dict
from kit.distributed import SINGLE, Dist
from kit.errors import KitError, describe_os_error
from kit.predict import ensemble_probs
from kit.tasks import Samples, get_task
from kit.trainer import fit

log = logging.getLogger(__name__)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_index, valid_index) pairs: disjoint validation parts covering every row once."""
    if folds < 2:
        raise KitError(f"cv.folds is {folds}; it must be at least 2")
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    if smallest < folds:
        raise KitError(
            f"cv.folds={folds} needs at least {folds} samples of every class, but the smallest class has "
            f"{smallest}; lower cv.folds"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """`train.deterministic: true`: refuse non-deterministic kernels (they matter on GPU; CPU is already)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def cross_validate(config: Config, data: Path | None = None, runs_dir: Path = runs.RUNS_DIR,
                   resume: str | None = None, parallel: str = "data") -> Path:
    """Train every fold, write checkpoints, oof.csv, metrics.json, logs and plots; return the run folder.

    `resume` (a run id, or "latest") continues an interrupted run: finished folds are kept and an unfinished
    fold continues from its last epoch. Under torchrun the ranks train each fold together (`parallel="data"`)
    or different folds (`parallel="folds"`); either way rank 0 writes the run's outputs, once.
    """
    dist = distributed.setup()
    if not dist.main and parallel == "data":
        logging.getLogger("kit").setLevel(logging.WARNING)  # rank 0 reports for everyone
    if config.train.deterministic:
        make_deterministic()
    else:
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: let cuDNN time its kernels once
    task = get_task(config)
    started = time.perf_counter()
    if not dist.main:
        dist.barrier()  # rank 0 decodes the images into the cache first; the others then read it
    train = task.load("train", data)
    if dist.main:
        dist.barrier()
    if data is not None:  # the run's config.yaml records where its training data came from
        config.data.train = str(Path(data).resolve())
    if config.cv.folds == "given":
        if train.is_valid is None or not train.is_valid.any():
            raise KitError("cv.folds=given needs data with its own validation split (an image folder with valid/)")
        splits = [(np.flatnonzero(~train.is_valid), np.flatnonzero(train.is_valid))]
    else:
        splits = stratified_folds(train.y, config.cv.folds, config.cv.seed)
    fold_of = np.full(len(train), -1, dtype=np.int64)
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[valid_idx] = fold
    run_dir = Path(dist.from_main(lambda: str(open_run(config, train.ids, fold_of, runs_dir, resume))))
    done = dist.from_main(lambda: [runs.fold_done(run_dir, k) for k in range(len(splits))])
    mine = range(len(splits)) if parallel == "data" else range(dist.rank, len(splits), dist.world)
    log.info("run %s: %d training rows, %d folds%s", run_dir, len(train), len(splits),
             f", {dist.world} processes ({parallel}-parallel)" if dist.world > 1 else "")
    writes = dist.main or parallel == "folds"
    writer = SummaryWriter(str(run_dir / "tensorboard")) if writes else None
    try:
        for fold in tqdm(mine, desc="folds", unit="fold", disable=None):
            if done[fold]:
                log.info("fold %d: finished earlier, kept", fold)
                continue
            train_fold(task, config, train, splits[fold], fold, run_dir, dist if parallel == "data" else SINGLE,
                       writer)
        dist.barrier()
        if dist.main:
            summarize_run(config, train, splits, run_dir, time.perf_counter() - started)
    except OSError as exc:  # e.g. the disk filled up: what is finished stays, and the run can go on later
        raise KitError(f"{describe_os_error(exc)}; then continue the run with {resume_hint(config, run_dir, data)}"
                       ) from None
    except KeyboardInterrupt:  # Ctrl-C: the finished folds and the last finished epoch's checkpoint stay
        raise KeyboardInterrupt(f"continue the run with {resume_hint(config, run_dir, data)}") from None
    finally:
        if writer:
            writer.close()
    distributed.teardown()
    return run_dir


def resume_hint(config: Config, run_dir: Path, data: Path | None) -> str:
    """The command that continues `run_dir` (resume refuses other settings, so it names DATA when one was given)."""
    where = f" DATA={data}" if data is not None else ""
    return f"`make train COMP={runs.comp_arg(config)}{where} RESUME={run_dir.name}` (with the same SET, if any)"


def score_names(config: Config) -> tuple[str, str]:
    """What the per-epoch validation accuracy and the fold's score measure, printed beside them. For images they
    differ: epochs validate at the crop size without TTA (cheaper), the fold's OOF predictions run at test_size with
    the TTA views, as test predictions do, so the fold score is not the best epoch's number."""
    if config.task != "image":
        return "valid", "OOF"
    tta = "+TTA" if len(config.tta.views) > 1 else ""
    return f"valid@{config.image.size}", f"OOF@{config.image.test_size or config.image.size}{tta}"


def open_run(config: Config, ids: list[str], fold_of: np.ndarray, runs_dir: Path, resume: str | None) -> Path:
    if resume is None:
        run_dir = runs.new_run(config, runs_dir)
        runs.write_folds(run_dir, ids, fold_of)
        return run_dir
    run_dir = runs.find_run(config.competition, None if resume == "latest" else resume, runs_dir)
    runs.check_resumable(run_dir, config, ids, fold_of)
    for stale in run_dir.glob(".*.tmp"):  # a write that the interruption cut short
        stale.unlink()
    log.info("resuming %s", run_dir)
    return run_dir


def train_fold(task, config: Config, train: Samples, split: tuple[np.ndarray, np.ndarray], fold: int,
               run_dir: Path, dist: Dist, writer: SummaryWriter | None) -> None:
    """Train one fold (from its resume checkpoint when there is one) and save it with its OOF probabilities."""
    fold_start = time.perf_counter()
    seed = config.train.seed + fold
    seed_everything(seed)
    part, valid = train.subset(split[0]), train.subset(split[1])
    state = task.fit(part)
    model = task.build_model(state, pretrained=True).to(dist.device)
    weights = None
    if config.train.class_weights:  # inverse frequency, normalised to mean 1
        counts = np.bincount(part.y, minlength=len(config.classes)).astype(np.float32)
        weights = torch.from_numpy(counts.sum() / np.maximum(counts, 1) / len(counts))

    def on_epoch(row: dict) -> None:
        for key, value in row.items():
            if writer and key not in ("epoch", "best", "finite"):
                writer.add_scalar(f"fold{fold}/{key}", value, row["epoch"])

    train_batches = task.loader(part, state, train=True, dist=dist)
    valid_batches = task.loader(valid, state, train=False, dist=dist)
    epoch_name, fold_name = score_names(config)
    result = fit(model, train_batches, valid_batches, config.train, seed=seed, on_epoch=on_epoch, desc=f"fold {fold}",
                 class_weights=weights, checkpoint=runs.resume_checkpoint(run_dir, fold), dist=dist,
                 valid_name=epoch_name)
    if not dist.main:
        return
    oof_model = task.ensemble([model], [state]).eval()
    probs = ensemble_probs(oof_model, task.batches(valid, [state]), len(valid), dist.device, desc=f"fold {fold} OOF")
    probs = probs.numpy()
    score = float((probs.argmax(1) == valid.y).mean())
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    row = {"fold": fold, "accuracy": score, "best_epoch_valid_accuracy": best["valid_accuracy"],
           "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
           "train_rows": len(part), "valid_rows": len(valid), "seconds": round(time.perf_counter() - fold_start, 2)}
    meta = {"fold": fold, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "score": score,
            "preprocessing": state, "summary": row, "history": result.history}
    runs.save_fold(run_dir, fold, model.cpu(), meta, probs)
    log.info("fold %d: %s accuracy %.4f (best epoch %d of %d, %s accuracy %.4f)", fold, fold_name, score,
             result.best_epoch, result.epochs_run, epoch_name, best["valid_accuracy"])


def summarize_run(config: Config, train: Samples, splits: list, run_dir: Path, seconds: float) -> None:
    """Gather the finished folds from disk into oof.csv, metrics.json, log.csv and the plots."""
    oof = np.zeros((len(train), len(config.classes)), dtype=np.float32)
    fold_of = np.full(len(train), -1, dtype=np.int64)
    fold_rows, epoch_rows = [], []
    for fold, (_, valid_idx) in enumerate(splits):
        meta, probs = runs.fold_result(run_dir, fold)
        oof[valid_idx], fold_of[valid_idx] = probs, fold
        fold_rows.append(meta["summary"])
        epoch_rows += [{"fold": fold, **row} for row in meta["history"]]
    summary = summarize(config, train, oof, fold_of, fold_rows, seconds)
    write_outputs(run_dir, config, train, oof, fold_of, summary, epoch_rows)
    log.info("CV accuracy %.4f ± %.4f over %d folds; OOF accuracy %.4f  (%s)",
             summary["cv"]["mean"], summary["cv"]["std"], len(splits), summary["cv"]["oof"], run_dir)


def summarize(config: Config, train: Samples, oof: np.ndarray, fold_of: np.ndarray, fold_rows: list[dict],
              seconds: float) -> dict:
    scores = np.array([r["accuracy"] for r in fold_rows])
    epoch_name, fold_name = score_names(config)
    seen = fold_of >= 0  # with cv.folds=given only the valid split has out-of-fold predictions
    pred, y = oof[seen].argmax(1), train.y[seen]
    per_class = {name: float((pred[y == i] == i).mean()) for i, name in enumerate(config.classes) if (y == i).any()}
    return {
        "competition": config.competition,
        "metric": "accuracy",
        "cv": {"mean": float(scores.mean()), "std": float(scores.std()), "oof": float((pred == y).mean())},
        "per_class_accuracy": per_class,
        # Two accuracies per fold, measured differently (see score_names): say which is which.
        "measured": {"accuracy": f"{fold_name}: the fold's out-of-fold predictions with the best epoch's weights, "
                                 "as test predictions are made; cv is built from these",
                     "best_epoch_valid_accuracy": f"{epoch_name}: the per-epoch validation (log.csv, curves.png) "
                                                  "at the best epoch"},
        "folds": fold_rows,
        "seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(config),
    }


def write_outputs(run_dir: Path, config: Config, train: Samples, oof: np.ndarray, fold_of: np.ndarray,
                  summary: dict, epoch_rows: list[dict]) -> None:
    seen = fold_of >= 0
    frame = pd.DataFrame({"id": train.ids, "target": train.y, "fold": fold_of, "pred": oof.argmax(1)})
    for i, name in enumerate(config.classes):
        frame[f"prob_{name}"] = oof[:, i]
    frame = frame[seen]
    with atomic.atomic_path(run_dir / "oof.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with atomic.atomic_path(run_dir / "log.csv") as tmp:
        pd.DataFrame(epoch_rows).to_csv(tmp, index=False)
    atomic.write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    plots.learning_curves(epoch_rows, run_dir / "curves.png", summary["folds"], score_names(config))
    plots.confusion(train.y[seen], oof[seen].argmax(1), config.classes, run_dir / "confusion.png")

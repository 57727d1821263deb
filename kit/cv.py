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
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from kit import atomic, blend, distributed, learners, plots, runs, target
from kit.config import Config, to_dict
from kit.distributed import SINGLE, Dist
from kit.errors import KitError, describe_os_error
from kit.metrics import Metric, best_threshold, get_metric, labels
from kit.objective import Objective
from kit.predict import ensemble_probs
from kit.tasks import Samples, Task, get_task
from kit.trainer import fit

log = logging.getLogger(__name__)


QUANTILE_BINS = 10  # regression folds are stratified on this many quantile bins of the target


def strata(y: np.ndarray, regression: bool) -> np.ndarray:
    """What folds stratify on: the class, or the target's quantile bin."""
    if not regression:
        return y
    edges = np.unique(np.quantile(y, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]))
    return np.searchsorted(edges, y, side="right")


def stratified_folds(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_index, valid_index) pairs: disjoint validation parts covering every row once, stratified on `y`
    (class indices or bins); with `groups`, the rows of a group stay in one fold."""
    if folds < 2:
        raise KitError(f"cv.folds is {folds}; it must be at least 2")
    if groups is not None:
        distinct = len(np.unique(groups))
        if distinct < folds:
            raise KitError(f"cv.folds={folds} needs at least {folds} groups, but cv.groups has {distinct}; "
                           "lower cv.folds")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    if smallest < folds:
        raise KitError(
            f"cv.folds={folds} needs at least {folds} samples of every class, but the smallest class has "
            f"{smallest}; lower cv.folds"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def time_folds(order: pd.Series, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward-chaining folds on a time column: the rows sorted by it make folds + 1 blocks, and fold k trains on
    blocks 0..k and validates on block k + 1 (the first block is never validated). Equal times share a block."""
    times = pd.to_numeric(order, errors="coerce")
    if times.isna().any():  # not numbers: dates or sortable text
        dates = pd.to_datetime(order, errors="coerce", format="mixed")
        times = dates.astype("int64") if dates.notna().all() else order.astype(str)
    ranks = times.rank(method="dense").to_numpy() - 1
    block = np.floor(ranks * (folds + 1) / (ranks.max() + 1)).astype(int)
    out = [(np.flatnonzero(block <= k), np.flatnonzero(block == k + 1)) for k in range(folds)]
    if any(len(v) == 0 for _, v in out):
        raise KitError(f"cv.time: the column has too few distinct times for {folds} folds; lower cv.folds")
    return out


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
    started = time.perf_counter()
    config, task, train = load_training(config, data, dist)
    splits = make_splits(config, train)
    fold_of = folds_of(splits, len(train), config.cv.repeats)
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


def load_training(config: Config, data: Path | None, dist: Dist) -> tuple[Config, Task, Samples]:
    """Set the backends, resolve the config against the data and load the training samples (rank 0 first: it
    decodes the images into the cache, then the other ranks read it)."""
    if config.train.deterministic:
        make_deterministic()
    else:
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: let cuDNN time its kernels once
    config = get_task(config).resolve(data)
    task = get_task(config)
    if not dist.main:
        dist.barrier()
    train = task.load("train", data)
    if dist.main:
        dist.barrier()
    if data is not None:  # the run's config.yaml records where its training data came from
        config.data.train = str(Path(data).resolve())
    learners.check_available(config.learners, config.target.type == "regression")
    return config, task, train


def make_splits(config: Config, train: Samples) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every fold's (train_index, valid_index): k stratified folds per repeat (seeds cv.seed, cv.seed + 1, ...),
    repeat after repeat; or the data's own split with cv.folds=given."""
    cv = config.cv
    if cv.folds == "given":
        if train.is_valid is None or not train.is_valid.any():
            raise KitError("cv.folds=given needs data with its own validation split (an image folder with valid/)")
        return [(np.flatnonzero(~train.is_valid), np.flatnonzero(train.is_valid))]
    if cv.time:
        return time_folds(_column(train, cv.time, "cv.time"), cv.folds)
    groups = _column(train, cv.groups, "cv.groups").astype(str).to_numpy() if cv.groups else None
    y = strata(train.y, config.target.type == "regression")
    return [split for r in range(cv.repeats) for split in stratified_folds(y, cv.folds, cv.seed + r, groups)]


def _column(train: Samples, name: str, key: str) -> pd.Series:
    """A column of the training table for the fold split (the raw or engineered data)."""
    if not hasattr(train.data, "columns") or name not in train.data.columns:
        raise KitError(f"{key} names column {name!r}, which the training data does not have")
    return train.data[name]


def folds_of(splits: list, rows: int, repeats: int) -> np.ndarray:
    """[repeats, rows]: the fold that validates each row in each repeat (-1: none, with cv.folds=given)."""
    fold_of = np.full((repeats, rows), -1, dtype=np.int64)
    per_repeat = len(splits) // repeats
    for fold, (_, valid_idx) in enumerate(splits):
        fold_of[fold // per_repeat, valid_idx] = fold
    return fold_of


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


def metric_of(config: Config) -> Metric:
    return get_metric(config.metric, config.target.type, config.root)


def in_units(config: Config, preds: np.ndarray) -> np.ndarray:
    """Predictions as the metric scores them: probabilities as they are, regression values back from
    transform(y) units."""
    return target.inverse(preds, config.target.transform) if config.target.type == "regression" else preds


def train_fold(task, config: Config, train: Samples, split: tuple[np.ndarray, np.ndarray], fold: int,
               run_dir: Path, dist: Dist, writer: SummaryWriter | None) -> None:
    """Train one fold's learners (the network from its resume checkpoint when there is one) on the same fitted
    preprocessing, and save them with each learner's OOF predictions."""
    fold_start = time.perf_counter()
    seed = config.train.seed + fold
    seed_everything(seed)
    part, valid = train.subset(split[0]), train.subset(split[1])
    state = task.fit(part)
    fitted, row, history = {}, {"fold": fold}, []
    if "net" in config.learners:
        fitted["net"], row, history = train_net(task, config, part, valid, state, fold, seed, run_dir, dist, writer)
    fitted |= task.fit_learners(part, state, seed)
    fitted = {name: fitted[name] for name in config.learners}  # the config's order: the order of the blend
    if not dist.main:
        return
    oof_model = task.ensemble([fitted], [state], None).to(dist.device).eval()  # sklearn learners were fit on the CPU
    preds = ensemble_probs(oof_model, task.batches(valid, [state]), len(valid), dist.device, desc=f"fold {fold} OOF")
    preds = preds.numpy()  # [rows, learners, classes (or 1 value)]
    metric = metric_of(config)
    scores = {name: metric.score(valid.y, in_units(config, preds[:, i])) for i, name in enumerate(fitted)}
    row |= {"score": metric.score(valid.y, in_units(config, preds.mean(1))), "learners": scores,
            "train_rows": len(part), "valid_rows": len(valid), "seconds": round(time.perf_counter() - fold_start, 2)}
    meta = {"fold": fold, "score": row["score"], "preprocessing": state, "summary": row, "history": history}
    runs.save_fold(run_dir, fold, {name: m.cpu() for name, m in fitted.items()}, meta, preds)
    epoch_name, fold_name = score_names(config)
    notes = [f"best epoch {row['best_epoch']} of {row['epochs_run']}, {epoch_name} {metric.name} "
             f"{row['best_epoch_valid_score']:.4f}"] if "best_epoch" in row else []
    if len(scores) > 1:
        notes.append("learners " + ", ".join(f"{n} {v:.4f}" for n, v in scores.items()) + "; scored: their mean")
    log.info("fold %d: %s %s %.4f%s", fold, fold_name, metric.name, row["score"],
             f" ({'; '.join(notes)})" if notes else "")


def objective(config: Config, part: Samples, state: dict) -> Objective:
    """The fold network's loss and validation metric (kit/objective.py)."""
    if config.target.type == "regression":
        t = state["target"]
        return Objective(metric_of(config), scale=(t["transform"], t["mean"], t["std"]))
    weights = None
    if config.train.class_weights:  # inverse frequency, normalised to mean 1
        counts = np.bincount(part.y, minlength=len(config.classes)).astype(np.float32)
        weights = torch.from_numpy(counts.sum() / np.maximum(counts, 1) / len(counts))
    return Objective(metric_of(config), class_weights=weights, label_smoothing=config.train.label_smoothing)


def train_net(task, config: Config, part: Samples, valid: Samples, state: dict, fold: int, seed: int, run_dir: Path,
              dist: Dist, writer: SummaryWriter | None) -> tuple[torch.nn.Module, dict, list[dict]]:
    """The fold's network, trained by the shared loop: (model with the best epoch's weights, summary, history)."""
    model = task.build_model(state, pretrained=True).to(dist.device)

    def on_epoch(row: dict) -> None:
        for key, value in row.items():
            if writer and key not in ("epoch", "best", "finite"):
                writer.add_scalar(f"fold{fold}/{key}", value, row["epoch"])

    train_batches = task.loader(part, state, train=True, dist=dist)
    valid_batches = task.loader(valid, state, train=False, dist=dist)
    epoch_name, _ = score_names(config)
    result = fit(model, train_batches, valid_batches, config.train, seed=seed, objective=objective(config, part, state),
                 on_epoch=on_epoch, desc=f"fold {fold}", checkpoint=runs.resume_checkpoint(run_dir, fold), dist=dist,
                 valid_name=epoch_name)
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    row = {"fold": fold, "best_epoch_valid_score": best["valid_score"], "best_epoch": result.best_epoch,
           "epochs_run": result.epochs_run}
    return model, row, result.history


def summarize_run(config: Config, train: Samples, splits: list, run_dir: Path, seconds: float) -> None:
    """Gather the finished folds from disk, blend the learners on their OOF predictions, and write oof.csv,
    metrics.json, log.csv and the plots."""
    repeats, metric = config.cv.repeats, metric_of(config)
    fold_of = folds_of(splits, len(train), repeats)
    width = len(config.classes) if config.classes else 1
    oof = np.zeros((repeats, len(train), len(config.learners), width), dtype=np.float32)
    fold_rows, epoch_rows = [], []
    for fold, (_, valid_idx) in enumerate(splits):
        meta, preds = runs.fold_result(run_dir, fold)
        oof[fold * repeats // len(splits), valid_idx] = preds
        fold_rows.append(meta["summary"])
        epoch_rows += [{"fold": fold, **row} for row in meta["history"]]
    y_fit = target.forward(train.y, config.target.transform) if config.target.type == "regression" else train.y
    mix = blend.choose(oof, y_fit, fold_of, config.blend,
                       lambda pred, rows: metric.sign * metric.score(train.y[rows], in_units(config, pred)))
    summary = summarize(config, train.y, oof, mix, fold_of, fold_rows, seconds)
    write_outputs(run_dir, config, train, oof, mix["oof"], fold_of, summary, epoch_rows)
    log_summary(config, summary, run_dir)


def log_summary(config: Config, summary: dict, run_dir: Path) -> None:
    cv, name = summary["cv"], summary["metric"]["name"]
    noise = f", sd over {cv['repeats']} repeats {cv['repeat_sd']:.4f}" if cv["repeats"] > 1 else ""
    threshold = f"; decision threshold {summary['threshold']:.3f} (chosen on OOF)" if summary["threshold"] else ""
    log.info("CV %s %.4f ± %.4f over %d folds%s; OOF %s %.4f%s  (%s)", name, cv["mean"], cv["std"], cv["folds"],
             noise, name, cv["oof"], threshold, run_dir)
    if len(config.learners) > 1:
        width = max(7, *map(len, summary["learners"]))
        for learner, score in summary["learners"].items():
            log.info("  %-*s CV %s %.4f ± %.4f; the blend's gain over it: %+.4f ± %.4f (sd over folds)", width,
                     learner, name, score["mean"], score["std"], score["blend_gain"]["mean"], score["blend_gain"]["sd"])
        b = summary["blend"]
        log.info("  blend by %s: %s (cross-fitted %s gain of fitted weights over the mean %+.4f, 2 s.e. %.4f)",
                 b["method"], {k: round(w, 3) for k, w in b["weights"].items()}, name, b["evidence"]["mean"],
                 b["evidence"]["two_se"])


def fold_scores(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, score) -> np.ndarray:
    """score(y_rows, pred_rows, fold) of [repeats, rows, K] OOF predictions per fold, in fold order."""
    folds = np.unique(fold_of[fold_of >= 0])
    truth = np.broadcast_to(y, fold_of.shape)
    return np.array([score(truth[fold_of == f], preds[fold_of == f], int(f)) for f in folds])


def scores(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, score) -> dict:
    """Fold scores' mean and sd, the OOF score over all rows (mean over repeats) and its sd over repeats."""
    per_fold = fold_scores(preds, y, fold_of, score)
    per_repeat = np.array([score(y[s], p[s]) for p, s in zip(preds, fold_of >= 0, strict=True)])
    return {"mean": float(per_fold.mean()), "std": float(per_fold.std()), "oof": float(per_repeat.mean()),
            "repeat_sd": float(per_repeat.std(ddof=1)) if len(per_repeat) > 1 else 0.0, "repeats": len(per_repeat),
            "folds": len(per_fold)}


def decision_threshold(metric: Metric, y: np.ndarray, served: np.ndarray, fold_of: np.ndarray) -> tuple:
    """For binary label metrics that tune it (F1, MCC): the threshold on p(positive) chosen on all OOF rows (served
    with the model) and per fold the one chosen on the other folds' rows (cross-fitted, for honest scores)."""
    if not metric.tuned_threshold or served.shape[-1] != 2:
        return None, None
    seen = fold_of >= 0
    truth = np.broadcast_to(y, fold_of.shape)
    per_fold = {int(f): best_threshold(metric, truth[seen & (fold_of != f)], served[seen & (fold_of != f)])
                for f in np.unique(fold_of[seen])}
    return best_threshold(metric, truth[seen], served[seen]), per_fold


def summarize(config: Config, y: np.ndarray, oof: np.ndarray, mix: dict, fold_of: np.ndarray, fold_rows: list[dict],
              seconds: float) -> dict:
    metric = metric_of(config)
    served = mix["oof"]
    threshold, per_fold_threshold = decision_threshold(metric, y, served, fold_of)

    def score(truth: np.ndarray, pred: np.ndarray, fold: int | None = None) -> float:
        return metric.score(truth, in_units(config, pred), per_fold_threshold and per_fold_threshold.get(fold))

    folds = np.unique(fold_of[fold_of >= 0])
    truth = np.broadcast_to(y, fold_of.shape)
    per_fold = np.array([score(truth[fold_of == f], served[fold_of == f], int(f)) for f in folds])
    for row, value in zip(fold_rows, per_fold, strict=True):
        row["score"] = float(value)  # the blend as served (cross-fitted weights and threshold, or the mean)
    served_scores = scores(served, y, fold_of, lambda t, p, f=None: metric.score(t, in_units(config, p), threshold))
    served_scores |= {"mean": float(per_fold.mean()), "std": float(per_fold.std())}
    learner_scores = {}
    for i, name in enumerate(config.learners):
        own = fold_scores(oof[:, :, i], y, fold_of, score)
        gain = metric.sign * (per_fold - own)
        learner_scores[name] = scores(oof[:, :, i], y, fold_of, score) | {
            "blend_gain": {"mean": float(gain.mean()), "sd": float(gain.std(ddof=1)) if len(own) > 1 else 0.0}}
    epoch_name, fold_name = score_names(config)
    return {
        "competition": config.competition,
        "metric": metric.describe(),
        "target": {"column": config.target.column, "type": config.target.type, "transform": config.target.transform},
        "cv": served_scores,
        "threshold": threshold,
        "learners": learner_scores,
        "blend": {"method": mix["method"], "weights": dict(zip(config.learners, mix["weights"], strict=True)),
                  "evidence": mix["gain_of_weights"],
                  "measured": f"cv is the blend with weights fitted on the other folds' OOF rows (cross-fitted), "
                              f"judged by {metric.name}; the served weights are fitted on all OOF rows"},
        "per_class_recall": per_class_recall(config, y, served, fold_of, threshold),
        # Two scores per fold, measured differently (see score_names): say which is which.
        "measured": {"score": f"{fold_name}: {metric.name} of the fold's out-of-fold predictions with the best "
                              "epoch's weights, as test predictions are made; cv is built from these",
                     "best_epoch_valid_score": f"{epoch_name}: {metric.name} of the per-epoch validation (log.csv, "
                                               "curves.png) at the best epoch"},
        "folds": fold_rows,
        "seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(config),
    }


def per_class_recall(config: Config, y: np.ndarray, served: np.ndarray, fold_of: np.ndarray,
                     threshold: float | None) -> dict:
    """Classification: the share of each class's OOF rows predicted as that class (first repeat)."""
    if config.target.type == "regression":
        return {}
    seen = fold_of[0] >= 0  # with cv.folds=given or cv.time only some rows have out-of-fold predictions
    pred, truth = labels(served[0][seen], threshold), y[seen]
    return {name: float((pred[truth == i] == i).mean()) for i, name in enumerate(config.classes) if (truth == i).any()}


def write_outputs(run_dir: Path, config: Config, train: Samples, oof: np.ndarray, served: np.ndarray,
                  fold_of: np.ndarray, summary: dict, epoch_rows: list[dict]) -> None:
    """oof.csv (a row per training row and repeat: the served blend's prediction, then a block per learner),
    log.csv, metrics.json and the plots."""
    frames = []
    regression = config.target.type == "regression"
    names = ["value"] if regression else [f"prob_{c}" for c in config.classes]
    for r in range(len(fold_of)):
        served_r = in_units(config, served[r])
        frame = pd.DataFrame({"id": train.ids, "repeat": r, "target": train.y, "fold": fold_of[r],
                              "pred": served_r[:, 0] if regression else labels(served_r, summary["threshold"])})
        for i, name in enumerate(names):
            frame[name] = served_r[:, i]
        for j, learner in enumerate(config.learners):
            own = in_units(config, oof[r, :, j])
            for i, name in enumerate(names):
                frame[f"{learner}_{name}"] = own[:, i]
        frames.append(frame[fold_of[r] >= 0])
    with atomic.atomic_path(run_dir / "oof.csv") as tmp:
        pd.concat(frames).to_csv(tmp, index=False)
    with atomic.atomic_path(run_dir / "log.csv") as tmp:
        pd.DataFrame(epoch_rows).to_csv(tmp, index=False)
    atomic.write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    write_plots(run_dir, config, train.y, in_units(config, served[0]), fold_of[0] >= 0, summary, epoch_rows)


def write_plots(run_dir: Path, config: Config, y: np.ndarray, served: np.ndarray, seen: np.ndarray, summary: dict,
                epoch_rows: list[dict]) -> None:
    metric = summary["metric"]["name"]
    if epoch_rows:
        plots.learning_curves(epoch_rows, run_dir / "curves.png", summary["folds"], score_names(config), metric)
    if len(config.learners) > 1:
        plots.learner_scores(summary, run_dir / "learners.png")
    if config.target.type == "regression":
        plots.residuals(y[seen], served[seen][:, 0], run_dir / "residuals.png", metric, summary["cv"]["oof"])
    else:
        plots.confusion(y[seen], labels(served[seen], summary["threshold"]), config.classes, run_dir / "confusion.png")

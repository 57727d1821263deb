"""The CV report of a finished run: the folds gathered from disk, the learners blended on their OOF predictions, the
scores with their noise, and oof.csv, metrics.json, log.csv and the plots."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit import atomic, blend, plots, runs
from kit.budget import Budget, bag_evidence
from kit.config import Config, to_dict
from kit.folds import folds_of
from kit.metrics import Metric, metric_of
from kit.target import Target, get_target
from kit.tasks import Samples

log = logging.getLogger(__name__)


def summarize_run(config: Config, train: Samples, splits: list, run_dir: Path, seconds: float, task,
                  budget: Budget | None = None) -> None:
    """Gather the finished folds from disk, blend the learners on their OOF predictions, and write oof.csv,
    metrics.json, log.csv and the plots. With repeats, the bag's evidence; with a budget, its plan, and the extra
    repeats served only when their bag beats one repeat alone beyond the noise (kit/budget.py)."""
    repeats, metric, target = config.cv.repeats, metric_of(config), get_target(config)
    fold_of = folds_of(splits, len(train), repeats)
    oof = np.zeros((repeats, len(train), len(config.learners), target.width), dtype=np.float32)
    fold_rows, epoch_rows = [], []
    for fold, (_, valid_idx) in enumerate(splits):
        meta, preds = runs.fold_result(run_dir, fold)
        oof[fold * repeats // len(splits), valid_idx] = preds
        fold_rows.append(meta["summary"])
        epoch_rows += [{"fold": fold, **row} for row in meta["history"]]

    def gain(pred: np.ndarray, rows: np.ndarray) -> float:
        return metric.sign * metric.score(train.y[rows], target.inverse(pred))

    mix = blend.choose(oof, target.forward(train.y), fold_of, config.blend, gain, values=target.predicts_values)
    summary = summarize(config, train.y, oof, mix, fold_of, fold_rows, seconds, task.score_names())
    summary |= served_folds(mix["oof"], fold_of, gain, budget, len(splits), metric.sign)
    summary["serving"] = serving_cost(fold_rows, summary["served_folds"], summary["blend"]["weights"], task.unit)
    write_outputs(run_dir, config, target, train, oof, mix["oof"], fold_of, summary, epoch_rows, task.score_names())
    log_summary(config, summary, run_dir)


def served_folds(served: np.ndarray, fold_of: np.ndarray, gain, budget: Budget | None, folds: int,
                 sign: float) -> dict:
    """metrics.json's served_folds (what kit.runs.load_ensemble serves), with the bag's evidence and its CV on the
    first repeat's folds when there are repeats, and the budget's plan when there is one: a budget's extra repeats
    are served only when kept."""
    out = {"served_folds": folds}
    if len(served) > 1:
        out["bags"] = bag_evidence(served, fold_of, gain)
        scores = sign * np.array(out["bags"].pop("signed_scores"))
        out["bags"]["cv"] = {"mean": float(scores.mean()), "std": float(scores.std())}
        out["bags"]["curve"] = [float(sign * v) for v in out["bags"].pop("signed_curve")]
        out["bags"]["served"] = out["bags"]["kept"] or budget is None
        if not out["bags"]["served"]:
            out["served_folds"] = folds // len(served)
    if budget:
        out["budget"] = budget.state_dict() | {"predict_seconds": round(budget.predict_seconds(
            out["served_folds"] // budget.folds), 2)}
    return out


def serving_cost(fold_rows: list[dict], folds: int, weights: dict[str, float], unit: str) -> dict:
    """What the served ensemble costs at inference: its models (the learners of weight > 0), and the rate on this
    machine estimated from the OOF passes (one fold's models over its validation rows, less the time of learners
    not served), divided by the folds served."""
    unserved = [name for name, w in weights.items() if w == 0]
    seconds = [(row["valid_rows"], row["oof_seconds"] - sum(row.get("predict_seconds", {}).get(n, 0.0)
                                                              for n in unserved)) for row in fold_rows
               if row.get("oof_seconds")]
    rates = [rows / s for rows, s in seconds if s > 0]
    learners = len(weights) - len(unserved)
    return {"models": folds * learners, "folds": folds, "learners": learners, "unit": unit,
            "per_second": round(float(np.median(rates)) / folds, 1) if rates else None}


def log_summary(config: Config, summary: dict, run_dir: Path) -> None:
    cv, name = summary["cv"], summary["metric"]["name"]
    noise = f", sd over {cv['repeats']} repeats {cv['repeat_sd']:.4f}" if cv["repeats"] > 1 else ""
    threshold = summary["threshold"]
    threshold = f"; {get_target(config).threshold_text(threshold)} (chosen on OOF)" if threshold is not None else ""
    log.info("CV %s %.4f ± %.4f over %d folds%s; OOF %s %.4f%s  (%s)", name, cv["mean"], cv["std"], cv["folds"],
             noise, name, cv["oof"], threshold, run_dir)
    if len(config.learners) > 1:
        width = max(7, *map(len, summary["learners"]))
        for learner, score in summary["learners"].items():
            log.info("  %-*s CV %s %.4f ± %.4f; the blend's gain over it: %+.4f ± %.4f (sd over folds)", width,
                     learner, name, score["mean"], score["std"], score["blend_gain"]["mean"], score["blend_gain"]["sd"])
        b = summary["blend"]
        chosen = b["selection_evidence"]
        log.info("  blend by %s: %s (cross-fitted %s gain of fitted weights over the mean %+.3g, 2 s.e. %.2g; of "
                 "ensemble selection over the %s %+.3g, 2 s.e. %.2g)", b["method"],
                 {k: round(w, 3) for k, w in b["weights"].items()}, name, b["evidence"]["mean"],
                 b["evidence"]["two_se"], chosen["over"], chosen["mean"], chosen["two_se"])
    if "bags" in summary:
        bags = summary["bags"]
        verdict = ("kept" if bags["served"] else "not kept: the first repeat's folds are served") if "budget" in \
            summary else "served, as cv.repeats asks"
        log.info("bag of %d repeats: CV %s %.4f ± %.4f on the first repeat's folds, a gain over one repeat alone of "
                 "%+.4f, 2 s.e. %.4f: %s", bags["repeats"], name, bags["cv"]["mean"], bags["cv"]["std"], bags["gain"],
                 bags["two_se"], verdict)
    limited = summary.get("budget", {}).get("time_limited")
    if limited:
        log.info("budget: stopped at the end of their share of a fold's time: %s (of %d folds)",
                 ", ".join(f"{name} in {n}" for name, n in limited.items()), summary["cv"]["folds"])
    cost = summary["serving"]
    rate = f", about {cost['per_second']:,.0f} {cost['unit']}/s on this machine" if cost["per_second"] else ""
    log.info("serving: %d model%s (%d fold%s x %d learner%s)%s", *_counted(cost["models"]), *_counted(cost["folds"]),
             *_counted(cost["learners"]), rate)


def _counted(n: int) -> tuple[int, str]:
    return n, "" if n == 1 else "s"


def summarize(config: Config, y: np.ndarray, oof: np.ndarray, mix: dict, fold_of: np.ndarray, fold_rows: list[dict],
              seconds: float, names: tuple[str, str]) -> dict:
    metric, target = metric_of(config), get_target(config)
    served = mix["oof"]
    threshold, per_fold_threshold = decision_threshold(metric, target, y, served, fold_of)

    def score(truth: np.ndarray, pred: np.ndarray, fold: int | None = None) -> float:
        return metric.score(truth, target.inverse(pred), per_fold_threshold and per_fold_threshold.get(fold))

    per_fold = fold_scores(served, y, fold_of, score)
    for row, value in zip(fold_rows, per_fold, strict=True):
        row["score"] = float(value)  # the blend as served (cross-fitted weights and threshold, or the mean)
    served_scores = scores(served, y, fold_of, lambda t, p, f=None: metric.score(t, target.inverse(p), threshold))
    served_scores |= {"mean": float(per_fold.mean()), "std": float(per_fold.std())}
    learner_scores = {}
    for i, name in enumerate(config.learners):
        own = fold_scores(oof[:, :, i], y, fold_of, score)
        gain = metric.sign * (per_fold - own)
        learner_scores[name] = scores(oof[:, :, i], y, fold_of, score) | {
            "blend_gain": {"mean": float(gain.mean()), "sd": float(gain.std(ddof=1)) if len(own) > 1 else 0.0}}
    epoch_name, fold_name = names
    return {
        "competition": config.competition,
        "metric": metric.describe(),
        "target": {"column": config.target.column, "type": config.target.type, "transform": config.target.transform},
        "cv": served_scores,
        "threshold": threshold,
        "learners": learner_scores,
        "blend": {"method": mix["method"], "weights": dict(zip(config.learners, mix["weights"], strict=True)),
                  "evidence": mix["gain_of_weights"], "selection_evidence": mix["gain_of_selection"],
                  "measured": f"cv is the blend with weights fitted on the other folds' OOF rows (cross-fitted), "
                              f"judged by {metric.name}; the served weights are fitted on all OOF rows"},
        "per_class_recall": per_class_recall(target, y, served, fold_of, threshold),
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


def scores(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, score) -> dict:
    """Fold scores' mean and sd, the OOF score over all rows (mean over repeats) and its sd over repeats."""
    per_fold = fold_scores(preds, y, fold_of, score)
    per_repeat = np.array([score(y[s], p[s]) for p, s in zip(preds, fold_of >= 0, strict=True)])
    return {"mean": float(per_fold.mean()), "std": float(per_fold.std()), "oof": float(per_repeat.mean()),
            "repeat_sd": float(per_repeat.std(ddof=1)) if len(per_repeat) > 1 else 0.0, "repeats": len(per_repeat),
            "folds": len(per_fold)}


def fold_scores(preds: np.ndarray, y: np.ndarray, fold_of: np.ndarray, score) -> np.ndarray:
    """score(y_rows, pred_rows, fold) of [repeats, rows, K] OOF predictions per fold, in fold order."""
    folds = np.unique(fold_of[fold_of >= 0])
    truth = per_repeat(y, fold_of)
    return np.array([score(truth[fold_of == f], preds[fold_of == f], int(f)) for f in folds])


def per_repeat(y: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """The truth [rows] or [rows, K] as one copy per repeat, [repeats, rows, ...], to index like fold_of."""
    return np.broadcast_to(y, fold_of.shape + y.shape[1:])


def decision_threshold(metric: Metric, target: Target, y: np.ndarray, served: np.ndarray, fold_of: np.ndarray
                       ) -> tuple:
    """For label metrics whose target tunes it (binary F1 and MCC: the threshold on p(positive); tags: one per tag):
    the threshold chosen on all OOF rows (served with the model) and per fold the one chosen on the other folds' rows
    (cross-fitted, for honest scores)."""
    if not target.tunes_threshold(metric):
        return None, None
    seen = fold_of >= 0
    truth = per_repeat(y, fold_of)
    per_fold = {int(f): target.best_threshold(metric, truth[seen & (fold_of != f)], served[seen & (fold_of != f)])
                for f in np.unique(fold_of[seen])}
    return target.best_threshold(metric, truth[seen], served[seen]), per_fold


def per_class_recall(target: Target, y: np.ndarray, served: np.ndarray, fold_of: np.ndarray,
                     threshold: float | None) -> dict:
    """Classification: the share of each class's OOF rows predicted as that class (first repeat)."""
    seen = fold_of[0] >= 0  # with cv.folds=given or cv.time only some rows have out-of-fold predictions
    return target.recall(y[seen], served[0][seen], threshold)


def write_outputs(run_dir: Path, config: Config, target: Target, train: Samples, oof: np.ndarray,
                  served: np.ndarray, fold_of: np.ndarray, summary: dict, epoch_rows: list[dict],
                  names: tuple[str, str]) -> None:
    """oof.csv (a row per training row and repeat: the served blend's prediction, then a block per learner),
    log.csv, metrics.json and the plots."""
    columns = target.oof_columns()
    frames = []
    for r in range(len(fold_of)):
        served_r = target.inverse(served[r])
        frame = pd.DataFrame({"id": train.ids, "repeat": r, "target": target.truth(train.y), "fold": fold_of[r],
                              "pred": target.predicted(served_r, summary["threshold"])})
        for i, name in enumerate(columns):
            frame[name] = served_r[:, i]
        for j, learner in enumerate(config.learners):
            own = target.inverse(oof[r, :, j])
            for i, name in enumerate(columns):
                frame[f"{learner}_{name}"] = own[:, i]
        frames.append(frame[fold_of[r] >= 0])
    with atomic.atomic_path(run_dir / "oof.csv") as tmp:
        pd.concat(frames).to_csv(tmp, index=False)
    with atomic.atomic_path(run_dir / "log.csv") as tmp:
        pd.DataFrame(epoch_rows).to_csv(tmp, index=False)
    atomic.write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    write_plots(run_dir, config, target, train.y, target.inverse(served[0]), fold_of[0] >= 0, summary, epoch_rows,
                names)


def write_plots(run_dir: Path, config: Config, target: Target, y: np.ndarray, served: np.ndarray, seen: np.ndarray,
                summary: dict, epoch_rows: list[dict], names: tuple[str, str]) -> None:
    metric = summary["metric"]["name"]
    if epoch_rows:
        plots.learning_curves(epoch_rows, run_dir / "curves.png", summary["folds"], names, metric)
    if len(config.learners) > 1:
        plots.learner_scores(summary, run_dir / "learners.png")
    if "bags" in summary:
        plots.bag_curve(summary, run_dir / "bags.png")
    target.plot(y[seen], served[seen], summary["threshold"], run_dir, metric, summary["cv"]["oof"])

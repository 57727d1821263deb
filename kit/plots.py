"""Pictures a person would rather look at than read: learning curves, the learners' fold scores, and a confusion
matrix (classes), per-tag scores (tags) or predicted-vs-true values (regression), each in the competition's metric."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kit import atomic  # noqa: E402


def learning_curves(epoch_rows: list[dict], path: Path, fold_rows: list[dict] = (),
                    names: tuple[str, str] = ("valid", "OOF"), metric: str = "score") -> None:
    """curves.png: see curves_figure."""
    _save(curves_figure(epoch_rows, fold_rows, names, metric), path)


def curves_figure(epoch_rows: list[dict], fold_rows: list[dict] = (), names: tuple[str, str] = ("valid", "OOF"),
                  metric: str = "score") -> plt.Figure:
    """Train/valid loss and the validation metric per epoch, one colour per fold, the best epoch marked; each fold's
    own score (`fold_rows`, measured as `names[1]`, not as the epochs' `names[0]`) as a star at its best epoch."""
    frame = pd.DataFrame(epoch_rows)
    scores = {row["fold"]: row for row in fold_rows if "best_epoch" in row}
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for (fold, rows), colour in zip(frame.groupby("fold"), plt.cm.tab10.colors, strict=False):
        best = rows[rows["best"]].tail(1)
        loss_ax.plot(rows["epoch"], rows["train_loss"], "--", color=colour, alpha=0.6)
        for ax, key in ((loss_ax, "valid_loss"), (score_ax, "valid_score")):
            ax.plot(rows["epoch"], rows[key], "-", color=colour, label=f"fold {fold} {names[0]}")
            ax.plot(best["epoch"], best[key], "o", color=colour)
        if fold in scores:
            score_ax.plot(scores[fold]["best_epoch"], scores[fold]["score"], "*", color=colour, markersize=12,
                          markeredgecolor="black", label=f"fold {fold} {names[1]}")
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"loss (dashed: train, solid: {names[0]}, dot: best)")
    score_ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} ({names[0]}, dot: best epoch"
                 + (f",\nstar: fold score {names[1]})" if scores else ")"))
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
    score_ax.legend(fontsize=7)
    return fig


def learner_scores(summary: dict, path: Path) -> None:
    """learners.png: every fold's score per learner and for the blend (dots), with mean ± sd (bars): whether
    the blend beats its learners by more than the spread over folds."""
    rows = [(name, [f["learners"][name] for f in summary["folds"]], score)
            for name, score in summary["learners"].items()]
    rows.append((f"blend ({summary['blend']['method']})", [f["score"] for f in summary["folds"]], summary["cv"]))
    metric = summary["metric"]
    better = "higher" if metric["greater_is_better"] else "lower"
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.6 * len(rows)))
    for i, (_, folds, score) in enumerate(rows):
        jitter = np.linspace(-0.15, 0.15, len(folds))
        ax.plot(folds, i + jitter, "o", alpha=0.5, color="tab:blue" if i < len(rows) - 1 else "tab:red")
        ax.errorbar(score["mean"], i, xerr=score["std"], fmt="D", color="black", capsize=4)
        ax.annotate(f"{score['mean']:.4f} ± {score['std']:.4f}", (score["mean"], i + 0.3), ha="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set(xlabel=f"fold {metric['name']}, {better} is better (dots: folds; diamond: mean ± sd)",
           ylim=(-0.6, len(rows) - 0.2),
           title="learners and their blend on the same folds")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix of out-of-fold predictions, with counts in the cells."""
    n = len(classes)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    share = np.trace(counts) / counts.sum()
    ax.set(xlabel="predicted", ylabel="true", title=f"OOF confusion ({share:.3f} on the diagonal)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)


def tag_scores(truth: np.ndarray, pred: np.ndarray, tags: list[str], path: Path) -> None:
    """tags.png: per tag, the precision, recall and F1 of the out-of-fold tags at the chosen thresholds, and how
    many rows hold it (truth) against how many were given it (predicted)."""
    tp = (truth & pred).sum(0)
    precision, recall = tp / np.maximum(pred.sum(0), 1), tp / np.maximum(truth.sum(0), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    order = np.argsort(f1)
    y = np.arange(len(tags))
    fig, (ax, counts) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.35 * len(tags) + 1.5)), sharey=True)
    for shift, values, name in ((-0.27, precision, "precision"), (0.0, recall, "recall"), (0.27, f1, "F1")):
        ax.barh(y + shift, values[order], height=0.27, label=name)
    ax.set_yticks(y, np.asarray(tags)[order])
    ax.set(xlim=(0, 1), xlabel="OOF score", title="per tag, at its threshold (worst F1 at the bottom)")
    ax.legend(loc="lower right", fontsize=8)
    counts.barh(y - 0.2, truth.sum(0)[order], height=0.4, label="true")
    counts.barh(y + 0.2, pred.sum(0)[order], height=0.4, label="predicted")
    counts.set(xlabel="rows", title="rows holding the tag")
    counts.legend(loc="lower right", fontsize=8)
    for a in (ax, counts):
        a.grid(axis="x", alpha=0.3)
    _save(fig, path)


def bag_curve(summary: dict, path: Path) -> None:
    """bags.png: the OOF score of a bag of the first 1, 2, ... repeats, against each repeat alone: how much each
    repeat added, and whether the bag was served."""
    bags, metric = summary["bags"], summary["metric"]
    sizes = np.arange(1, len(bags["curve"]) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(sizes, bags["curve"], "o-", label="the bag of the first n repeats (OOF, every row)")
    ax.axhline(bags["curve"][0], color="grey", linestyle="--", label="the first repeat alone")
    better = "higher" if metric["greater_is_better"] else "lower"
    served = "served" if bags["served"] else "not kept: the first repeat's folds are served"
    ax.set(xlabel="repeats in the bag", ylabel=f"{metric['name']} ({better} is better)",
           title=f"bag of {bags['repeats']} repeats: {bags['gain']:+.3g} over one repeat alone\n"
                 f"(per fold, 2 s.e. {bags['two_se']:.2g}): {served}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def residuals(y: np.ndarray, pred: np.ndarray, path: Path, metric: str, score: float) -> None:
    """residuals.png: out-of-fold predicted against true values (the diagonal is perfect), and the residuals'
    spread along the true value."""
    fig, (ax, res) = plt.subplots(1, 2, figsize=(11, 4.5))
    alpha = min(0.6, max(0.05, 300 / max(len(y), 1)))
    ax.scatter(y, pred, s=4, alpha=alpha)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], "k--", linewidth=1)
    ax.set(xlabel="true", ylabel="predicted (OOF)", title=f"OOF predictions ({metric} {score:.4g})")
    res.scatter(y, pred - y, s=4, alpha=alpha)
    res.axhline(0, color="black", linewidth=1)
    res.set(xlabel="true", ylabel="predicted - true", title="residuals")
    for a in (ax, res):
        a.grid(alpha=0.3)
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

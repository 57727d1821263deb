"""Compare two runs scored on the same folds: is B's gain over A bigger than the noise?

Fold scores of two recipes on the same split are paired: the spread of their *difference* over folds (and over
repeats, with cv.repeats) is the noise that a gain must beat, which is far smaller than either run's own spread.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError


def fold_accuracies(run_dir: Path) -> tuple[np.ndarray, int]:
    """(every fold's accuracy in fold order, repeats) of a finished run."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise KitError(f"{run_dir} is not a finished run (no metrics.json); finish it or pick another run")
    metrics = json.loads(path.read_text())
    return np.array([f["accuracy"] for f in metrics["folds"]]), int(metrics["cv"].get("repeats", 1))


def compare(a: Path, b: Path) -> dict:
    """B minus A per fold: mean, sd over folds, sd of the per-repeat means, and whether it beats 2 standard
    errors. Refuses runs whose folds differ (other data, cv.folds, cv.seed or cv.repeats)."""
    folds_a, folds_b = (pd.read_csv(r / "folds.csv", dtype={"id": str}) for r in (a, b))
    if not folds_a.equals(folds_b):
        raise KitError(f"{a.name} and {b.name} were not scored on the same folds (other data or cv settings); "
                       "train both with the same DATA and cv.folds, cv.seed, cv.repeats")
    (acc_a, repeats), (acc_b, _) = fold_accuracies(a), fold_accuracies(b)
    diff = acc_b - acc_a
    per_repeat = diff.reshape(repeats, -1).mean(1)
    two_se = 2 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("inf")
    return {"a": summary(acc_a, repeats), "b": summary(acc_b, repeats),
            "b_minus_a": {"mean": float(diff.mean()), "sd_over_folds": float(diff.std(ddof=1)),
                          "sd_over_repeats": float(per_repeat.std(ddof=1)) if repeats > 1 else None,
                          "two_se": float(two_se), "beyond_noise": bool(abs(diff.mean()) > two_se)}}


def summary(acc: np.ndarray, repeats: int) -> dict:
    per_repeat = acc.reshape(repeats, -1).mean(1)
    return {"mean": float(acc.mean()), "sd_over_folds": float(acc.std(ddof=1)),
            "sd_over_repeats": float(per_repeat.std(ddof=1)) if repeats > 1 else None, "folds": len(acc)}


def report(a: Path, b: Path) -> str:
    result = compare(a, b)
    lines = []
    for key, run in (("a", a), ("b", b)):
        s = result[key]
        noise = f", sd over repeats {s['sd_over_repeats']:.4f}" if s["sd_over_repeats"] is not None else ""
        lines.append(f"{key.upper()} {run.name}: CV accuracy {s['mean']:.4f} ± {s['sd_over_folds']:.4f} "
                     f"(sd over {s['folds']} folds{noise})")
    d = result["b_minus_a"]
    verdict = "beyond the noise" if d["beyond_noise"] else "within the noise"
    lines.append(f"B - A: {d['mean']:+.4f}, sd of the difference over folds {d['sd_over_folds']:.4f}"
                 + (f", over repeats {d['sd_over_repeats']:.4f}" if d["sd_over_repeats"] is not None else "")
                 + f"; 2 s.e. {d['two_se']:.4f}: {verdict}")
    return "\n".join(lines)

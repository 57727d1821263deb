"""Compare two runs scored on the same folds: is B's gain over A bigger than the noise?

Fold scores of two recipes on the same split are paired: the spread of their *difference* over folds (and over
repeats, with cv.repeats) is the noise that a gain must beat, which is far smaller than either run's own spread.
Gains are signed by the metric's direction: positive is better, for a metric to minimise as for one to maximise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError


def fold_scores(run_dir: Path) -> tuple[np.ndarray, int, dict]:
    """(every fold's score in fold order, repeats, the metric's description) of a finished run."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise KitError(f"{run_dir} is not a finished run (no metrics.json); finish it or pick another run")
    metrics = json.loads(path.read_text())
    if not isinstance(metrics.get("metric"), dict):
        raise KitError(f"{run_dir} was trained by an older kit; train it again to compare it")
    return np.array([f["score"] for f in metrics["folds"]]), int(metrics["cv"].get("repeats", 1)), metrics["metric"]


def compare(a: Path, b: Path) -> dict:
    """B's gain over A per fold (B - A, or A - B for a metric to minimise): mean, sd over folds, sd of the
    per-repeat means, and whether it beats 2 standard errors. Refuses runs whose folds or metrics differ."""
    folds_a, folds_b = (pd.read_csv(r / "folds.csv", dtype={"id": str}) for r in (a, b))
    if not folds_a.equals(folds_b):
        raise KitError(f"{a.name} and {b.name} were not scored on the same folds (other data or cv settings); "
                       "train both with the same DATA and cv.folds, cv.seed, cv.repeats")
    (score_a, repeats, metric), (score_b, _, metric_b) = fold_scores(a), fold_scores(b)
    if metric["name"] != metric_b["name"]:
        raise KitError(f"{a.name} is scored by {metric['name']} and {b.name} by {metric_b['name']}; "
                       "compare runs of the same metric")
    gain = (score_b - score_a) * (1 if metric["greater_is_better"] else -1)
    per_repeat = gain.reshape(repeats, -1).mean(1)
    two_se = 2 * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("inf")
    return {"metric": metric, "a": summary(score_a, repeats), "b": summary(score_b, repeats),
            "gain": {"mean": float(gain.mean()), "sd_over_folds": float(gain.std(ddof=1)),
                     "sd_over_repeats": float(per_repeat.std(ddof=1)) if repeats > 1 else None,
                     "two_se": float(two_se), "beyond_noise": bool(abs(gain.mean()) > two_se)}}


def summary(scores: np.ndarray, repeats: int) -> dict:
    per_repeat = scores.reshape(repeats, -1).mean(1)
    return {"mean": float(scores.mean()), "sd_over_folds": float(scores.std(ddof=1)),
            "sd_over_repeats": float(per_repeat.std(ddof=1)) if repeats > 1 else None, "folds": len(scores)}


def report(a: Path, b: Path) -> str:
    result = compare(a, b)
    name = result["metric"]["name"]
    lines = []
    for key, run in (("a", a), ("b", b)):
        s = result[key]
        noise = f", sd over repeats {s['sd_over_repeats']:.4f}" if s["sd_over_repeats"] is not None else ""
        lines.append(f"{key.upper()} {run.name}: CV {name} {s['mean']:.4f} ± {s['sd_over_folds']:.4f} "
                     f"(sd over {s['folds']} folds{noise})")
    d = result["gain"]
    verdict = ("better" if d["mean"] > 0 else "worse") + " beyond the noise" if d["beyond_noise"] else \
        "within the noise"
    direction = "higher" if result["metric"]["greater_is_better"] else "lower"
    lines.append(f"B's gain over A ({name}, {direction} is better): {d['mean']:+.4f}, sd of the difference over "
                 f"folds {d['sd_over_folds']:.4f}"
                 + (f", over repeats {d['sd_over_repeats']:.4f}" if d["sd_over_repeats"] is not None else "")
                 + f"; 2 s.e. {d['two_se']:.4f}: {verdict}")
    return "\n".join(lines)

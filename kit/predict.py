"""Test-set prediction: the fold ensemble of a run (with its TTA) -> submission.csv."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kit import runs
from kit.ensemble import predict_proba
from kit.submission import make_submission, write_submission
from kit.tasks import get_task

log = logging.getLogger(__name__)


def predict_run(run_dir: Path, test: Path | None = None, out: Path | None = None) -> Path:
    """Average the run's folds over the test set and write a validated submission.csv."""
    config = runs.run_config(run_dir)
    task = get_task(config)
    folds = runs.load_folds(run_dir)
    states = [meta["preprocessing"] for _, meta in folds]
    models = []
    for weights, state in zip((w for w, _ in folds), states, strict=True):
        model = task.build_model(state)
        model.load_state_dict(weights)
        models.append(model)
    samples = task.load("test", test)
    probs = predict_proba(task.ensemble(models, states), task.batches(samples, states)).numpy()
    frame = make_submission(samples.ids, probs, config)
    path = write_submission(frame, out or run_dir / "submission.csv", samples.ids, config)
    counts = np.bincount(probs.argmax(1), minlength=len(config.classes))
    log.info("wrote %s: %d rows from %d folds; predicted class counts %s", path, len(frame), len(folds),
             dict(zip(config.classes, counts.tolist(), strict=True)))
    return path

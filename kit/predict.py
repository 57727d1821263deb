"""Test-set prediction: the fold ensemble of a run (with its TTA) -> submission.csv."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kit import runs
from kit.config import Config
from kit.ensemble import predict_proba
from kit.submission import make_submission, write_submission
from kit.tasks import get_task

log = logging.getLogger(__name__)


def predict_run(run_dir: Path, test: Path | None = None, out: Path | None = None) -> Path:
    """Average the run's folds over the test set and write a validated submission.csv."""
    config = runs.run_config(run_dir)
    task = get_task(config)
    ensemble, states = runs.load_ensemble(run_dir, task)
    samples = task.load("test", test)
    probs = predict_proba(ensemble, task.batches(samples, states)).numpy()
    frame = make_submission(samples.ids, probs, config)
    path = write_submission(frame, out or run_dir / "submission.csv", samples.ids, config)
    counts = np.bincount(probs.argmax(1), minlength=len(config.classes))
    log.info("wrote %s: %d rows from %d folds; predicted class counts %s", path, len(frame), len(states),
             dict(zip(config.classes, counts.tolist(), strict=True)))
    return path


def predict_export(export_dir: Path, config: Config, backend: str = "onnx", test: Path | None = None,
                   out: Path | None = None) -> Path:
    """submission.csv from the exported model (through kit.runtime), on the same test data as predict_run."""
    from kit import runtime

    predictor = runtime.load(export_dir, backend=backend)
    task = get_task(config)
    samples = task.load("test", test)
    states = predictor.meta["features"]["folds"] if config.task == "tabular" else []
    probs = np.concatenate([predictor.run(x.numpy()) for x in task.batches(samples, states)])
    frame = make_submission(samples.ids, probs, config)
    path = write_submission(frame, out or export_dir / "submission.csv", samples.ids, config)
    log.info("wrote %s from the %s export in %s", path, backend, export_dir)
    return path

"""`make tune`: a hyperparameter search per learner with Optuna, scored by CV in the competition's metric.

Each learner's search space is written once, in its own module (`space(target, rows)` on its settings). A study per
learner lives in an Optuna storage: SQLite in runs/<comp>/tune/ by default, or any database URL Optuna takes
(STORAGE=postgresql://...), so that processes on many machines can run trials of one study at once. The first trial
is the learner's current settings; TPE proposes the rest, and a median pruner stops a trial whose running mean over
the folds falls behind. The folds and their fitted encodings are made once and shared by every trial. The best
trial is kept only when it beats the current settings by more than twice the standard error of their paired fold
differences; the kept settings go into tuned.yaml beside the config (RECIPE=tuned), the measurements into
runs/<comp>/tune/tune.json.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
import yaml
from optuna.trial import TrialState

from kit import atomic, runs
from kit.config import Config
from kit.cv import fold_job, load_training, oof_predictions, seed_everything
from kit.distributed import SINGLE
from kit.errors import KitError
from kit.folds import make_splits
from kit.learners import get_learner
from kit.metrics import metric_of
from kit.target import get_target

log = logging.getLogger(__name__)
TRIALS = 20  # per learner, when neither TRIALS= nor TIME= is given


def tune(config: Config, trials: int | None, seconds: float | None, storage: str | None,
         runs_dir: Path = runs.RUNS_DIR) -> Path:
    """Search each tunable learner of the config; write tuned.yaml beside it and return its path."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # kit logs each trial itself, one line
    for quiet in ("kit.predict", "kit.learners.compiled"):  # not each fold of each trial
        logging.getLogger(quiet).setLevel(logging.WARNING)
    config, task, train = load_training(config, None, SINGLE)
    splits = make_splits(config, train)
    folder = Path(runs_dir) / config.competition / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage or f"sqlite:///{(folder / 'study.db').resolve()}")
    jobs = [fold_job(task, config, train, split, k, folder) for k, split in enumerate(splits)]
    spaces = {name: space_of(config, name, len(jobs[0].part)) for name in config.learners}
    skipped = [name for name, space in spaces.items() if not space]
    if skipped:
        log.info("not tuned: %s (no search space for this target and table)", ", ".join(skipped))
    names = [name for name in config.learners if spaces[name]]
    if not names:
        raise KitError(f"none of the learners {config.learners} has settings to tune here")
    results = {}
    for name in names:
        budget = seconds / len(names) if seconds else None
        results[name] = search(config, name, spaces[name], jobs, trials if trials or budget else TRIALS, budget,
                               storage)
    atomic.write_text(folder / "tune.json", json.dumps(results, indent=1))
    path = config.root / "tuned.yaml"
    atomic.write_text(path, render(config, results, len(splits)))
    return path


def space_of(config: Config, name: str, rows: int) -> dict[str, tuple[float, float]]:
    settings = getattr(config, name, None)
    space = getattr(settings, "space", None)
    return space(get_target(config), rows) if space else {}


def suggest(trial: optuna.Trial, defaults, space: dict[str, tuple[float, float]]) -> dict:
    """One value per setting of the space, on a log scale; whole numbers where the default is one."""
    return {key: trial.suggest_int(key, int(low), int(high), log=True) if isinstance(getattr(defaults, key), int)
            else trial.suggest_float(key, low, high, log=True) for key, (low, high) in space.items()}


def fold_scores(config: Config, name: str, jobs: list, trial: optuna.Trial | None = None) -> list[float]:
    """The learner's score on each fold's validation rows with `config`'s settings (reported to the pruner)."""
    metric, scores = metric_of(config), []
    for job in jobs:
        job.config = config  # the fold's rows and fitted encoding stay; only the learner's settings change
        seed_everything(job.seed)
        module = get_learner(name).fit(job)[0]
        preds = oof_predictions(job, {name: module})
        scores.append(float(metric.score(job.valid.y, job.target.inverse(preds[:, 0]))))
        if trial is not None:
            trial.report(float(np.mean(scores)), len(scores) - 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return scores


def search(config: Config, name: str, space: dict, jobs: list, trials: int | None, seconds: float | None,
           storage: optuna.storages.BaseStorage) -> dict:
    """The study of one learner: its current settings first, then TPE; the result as tune.json records it."""
    metric = metric_of(config)
    defaults = getattr(config, name)
    study = study_name(config, name, jobs)
    study = optuna.create_study(
        study_name=study, storage=storage, load_if_exists=True,
        direction="maximize" if metric.greater_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.train.seed + len(_stored_trials(storage, study))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
    current = {key: getattr(defaults, key) for key in space}
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    if not any(current in (t.params, t.system_attrs.get("fixed_params")) for t in study.get_trials(states=live)):
        study.enqueue_trial(current, user_attrs={"current": True})  # once per study (a failed one runs again)
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", os.getpid())  # which process ran it, when several share the study
        settings = dataclasses.replace(defaults, **suggest(trial, defaults, space))
        scores = fold_scores(dataclasses.replace(config, learners=[name], **{name: settings}), name, jobs, trial)
        trial.set_user_attr("folds", scores)
        return float(np.mean(scores))

    study.optimize(objective, n_trials=trials, timeout=seconds, callbacks=[_logger(name, metric.name, started)])
    return summarize(study, metric, current)


def open_storage(url: str, tries: int = 5) -> optuna.storages.BaseStorage:
    """The Optuna storage at `url`. Workers that start on a new database at the same instant race to create its
    tables (one gets an IntegrityError or "table already exists"): the loser tries again once the winner has."""
    for attempt in range(tries):
        try:
            return optuna.storages.get_storage(url)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            error = getattr(exc, "orig", None) or exc
            time.sleep(0.5 * (attempt + 1))
    raise KitError(f"cannot open the Optuna storage {url}: {error.__class__.__name__}: {error}; check STORAGE "
                   "(e.g. sqlite:///study.db, postgresql://user@host/db)")


def study_name(config: Config, name: str, jobs: list) -> str:
    """<comp>-<learner>-<digest of the folds' rows and the metric>: trials on other folds never share a study."""
    digest = hashlib.sha256(metric_of(config).name.encode())
    for job in jobs:
        digest.update("\0".join(job.valid.ids).encode() + b"\1")
    return f"{config.competition}-{name}-{digest.hexdigest()[:10]}"


def _stored_trials(storage: optuna.storages.BaseStorage, study: str) -> list:
    """The trials a study already holds (none when it is new): a later worker's sampler gets another seed."""
    try:
        return optuna.load_study(study_name=study, storage=storage).trials
    except KeyError:
        return []


def summarize(study: optuna.Study, metric, current: dict) -> dict:
    """The best trial against the current settings' trial, fold by fold: kept when the paired gain is above twice
    its standard error."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    base = next((t for t in done if t.user_attrs.get("current") or t.params == current), None)
    best = study.best_trial
    if base is None:
        raise KitError(f"study {study.study_name}: the trial of the current settings did not finish")
    gain = metric.sign * (np.asarray(best.user_attrs["folds"]) - np.asarray(base.user_attrs["folds"]))
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    kept = bool(gain.mean() > 2 * se)
    pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    return {"study": study.study_name, "trials": len(done), "pruned": pruned, "best_trial": best.number,
            "settings": best.params if kept else current, "best": best.params, "current": current,
            "cv": float(best.value), "folds": best.user_attrs["folds"], "sd": float(np.std(best.user_attrs["folds"])),
            "current_cv": float(base.value), "current_folds": base.user_attrs["folds"],
            "gain": float(gain.mean()), "two_se": 2 * se, "kept": kept}


def _logger(name: str, metric: str, started: float):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        elapsed = time.perf_counter() - started
        if trial.state == TrialState.PRUNED:
            log.info("%s trial %d: pruned after fold %d (%.0f s)", name, trial.number, trial.last_step, elapsed)
            return
        if trial.state != TrialState.COMPLETE:
            return
        folds = ", ".join(f"{s:.4f}" for s in trial.user_attrs["folds"])
        log.info("%s trial %d: %s %.4f (folds %s), best %.4f (trial %d); %s  %.0f s", name, trial.number, metric,
                 trial.value, folds, study.best_value, study.best_trial.number, _settings(trial.params), elapsed)
    return callback


def _settings(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def render(config: Config, results: dict, folds: int) -> str:
    """tuned.yaml: the kept settings per learner (a recipe: it changes only the keys it names), each learner's
    measurements in comments."""
    metric = metric_of(config)
    lines = [f"# {config.competition}: written by `make tune` on {datetime.date.today().isoformat()}; CV over "
             f"{folds} folds (seed {config.train.seed}) in {metric.name} "
             f"({'higher' if metric.greater_is_better else 'lower'} is better). `make train RECIPE=tuned` uses it."]
    values = {}
    for name, r in results.items():
        verdict = "kept" if r["kept"] else "not kept: the current settings stay"
        lines.append(f"# {name}: best of {r['trials']} trials ({r['pruned']} pruned) {r['cv']:.4f} ± {r['sd']:.4f} "
                     f"against the current settings' {r['current_cv']:.4f}: gain {r['gain']:+.4f}, 2 s.e. "
                     f"{r['two_se']:.4f}; {verdict}")
        if r["kept"]:
            values[name] = r["settings"]
    text = "\n".join(lines) + "\n" + (yaml.safe_dump(values, sort_keys=False) if values else "{}\n")
    if (yaml.safe_load(text) or {}) != values:
        raise AssertionError(f"tuned.yaml does not load back to {values}")
    return text

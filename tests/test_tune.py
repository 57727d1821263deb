"""`make tune` (kit/tune.py): Optuna studies per learner scored by CV, tuned.yaml as a recipe, and workers sharing
one study. Real Optuna, real learners, Titanic's shipped table (copied, so the repo's competition is untouched)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml
from conftest import CPU_ENV, ROOT, run_kit

from kit.metrics import get_metric
from kit.tune import summarize


@pytest.fixture
def titanic(tmp_path):
    comp = tmp_path / "titanic"
    shutil.copytree(ROOT / "competitions" / "titanic", comp)
    return comp


def test_tune_writes_a_recipe_whose_settings_reproduce_their_cv(titanic, tmp_path):
    runs = tmp_path / "runs"
    tuned = run_kit("tune", "--comp", str(titanic), "--runs", str(runs), "--trials", "4",
                    "--set", "learners=[gbdt,linear,net]")
    assert tuned.returncode == 0, tuned.stderr
    assert "not tuned: net (no search space" in tuned.stderr and "gbdt trial 3: accuracy" in tuned.stderr
    results = json.loads((runs / "titanic" / "tune" / "tune.json").read_text())
    assert set(results) == {"gbdt", "linear"}
    gbdt = results["gbdt"]
    assert gbdt["trials"] + gbdt["pruned"] == 4 and gbdt["current"]["max_iter"] == 100  # the config's own first
    assert len(gbdt["folds"]) == 5 and gbdt["cv"] == pytest.approx(np.mean(gbdt["folds"]))
    more = run_kit("tune", "--comp", str(titanic), "--runs", str(runs), "--trials", "2", "--set", "learners=[gbdt]")
    assert more.returncode == 0, more.stderr  # the same study again: two more trials, the current settings not again
    trials = optuna.load_study(study_name=gbdt["study"], storage=f"sqlite:///{runs / 'titanic' / 'tune' / 'study.db'}"
                               ).trials
    assert len(trials) == 6 and sum(bool(t.user_attrs.get("current")) for t in trials) == 1
    results["gbdt"] = json.loads((runs / "titanic" / "tune" / "tune.json").read_text())["gbdt"]
    assert results["gbdt"]["trials"] + results["gbdt"]["pruned"] == 6
    recipe = (titanic / "tuned.yaml").read_text()
    assert "# gbdt: best of" in recipe and "2 s.e." in recipe
    assert (yaml.safe_load(recipe) or {}) == {n: r["settings"] for n, r in results.items() if r["kept"]}
    # Training with the best trial's settings gives the fold scores the study recorded for it.
    best = " ".join(f"gbdt.{k}={v}" for k, v in gbdt["best"].items())
    train = run_kit("train", "--comp", str(titanic), "--runs", str(runs / "check"), "--set",
                    f"learners=[gbdt] {best}")
    assert train.returncode == 0, train.stderr
    folds = sorted((runs / "check" / "titanic" / "latest").glob("fold*.json"))
    scores = [json.loads(f.read_text())["summary"]["learners"]["gbdt"] for f in folds]
    assert scores == pytest.approx(gbdt["folds"], abs=1e-12)
    again = run_kit("train", "--comp", str(titanic), "--recipe", "tuned", "--runs", str(runs / "recipe"),
                    "--set", "learners=[gbdt] train.epochs=1")
    assert again.returncode == 0, again.stderr


def _study(folds_by_trial: list[list[float]]) -> optuna.Study:
    """A real in-memory study whose first trial holds the current settings."""
    study = optuna.create_study(direction="maximize")
    distribution = {"C": optuna.distributions.FloatDistribution(1e-3, 100.0, log=True)}
    for number, folds in enumerate(folds_by_trial):
        study.add_trial(optuna.trial.create_trial(
            params={"C": 1.0 if number == 0 else 0.1 * number}, distributions=distribution, value=float(np.mean(folds)),
            user_attrs={"folds": folds, **({"current": True} if number == 0 else {})}))
    return study


def test_a_best_trial_is_kept_only_beyond_the_noise():
    metric = get_metric("accuracy")
    steady = summarize(_study([[0.80, 0.82, 0.78, 0.81, 0.79], [0.82, 0.84, 0.80, 0.83, 0.81]]), metric, {"C": 1.0})
    assert steady["kept"] and steady["settings"] == {"C": 0.1} and steady["gain"] == pytest.approx(0.02)
    noisy = summarize(_study([[0.80, 0.82, 0.78, 0.81, 0.79], [0.86, 0.78, 0.83, 0.76, 0.83]]), metric, {"C": 1.0})
    assert noisy["gain"] > 0 and noisy["gain"] < noisy["two_se"]
    assert not noisy["kept"] and noisy["settings"] == {"C": 1.0} and noisy["best"] == {"C": 0.1}


def test_two_workers_share_one_study_without_losing_a_trial(titanic, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = [sys.executable, "-m", "kit", "tune", "--comp", str(titanic), "--trials", "6", "--storage", storage,
               "--set", "learners=[gbdt]"]
    workers = [subprocess.Popen([*command, "--runs", str(tmp_path / f"runs{k}")], cwd=ROOT, env=CPU_ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(12))  # every trial of both workers, none twice
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert any(t.user_attrs.get("current") for t in trials)  # the current settings are tried (twice if both workers
    # enqueued them at the same instant: Optuna's storage has no atomic check-and-insert)
    by_worker: dict[int, list] = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    assert len(by_worker) == 2
    first, second = ([min(t.datetime_start for t in ts), max(t.datetime_complete for t in ts)]
                     for ts in by_worker.values())
    assert first[0] < second[1] and second[0] < first[1]  # their trials ran at the same time, interleaved

"""TIME= (kit/budget.py): the plan after the first fold, the clock checked before each repeat, the bag kept only
beyond the noise, and a real run on Titanic's shipped table that keeps to its budget by its own record."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from conftest import ROOT, run_kit
from sklearn.metrics import roc_auc_score

from kit.budget import FIT_SHARE, MAX_REPEATS, WIDEN, Budget, Deadline, bag_evidence
from kit.config import load_config
from kit.learners import get_learner
from kit.learners.gbdt import CHUNK
from kit.target import Binary


def _budget(seconds: float, elapsed: float = 0.0) -> Budget:
    return Budget(seconds=seconds, folds=3, test_rows=1000, started=time.perf_counter() - elapsed)


def _fold(seconds: float, **learners: float) -> dict:
    """A first fold's summary row: its time, its OOF pass (0.1 s for 100 rows) and each learner's fit."""
    return {"seconds": seconds, "oof_seconds": 0.1, "valid_rows": 100, "learner_seconds": learners or {"a": seconds}}


def test_the_plan_fits_the_folds_and_the_prediction_in_what_is_left():
    # Each fold 10 s; the prediction 10 s to start + 0.001 s per test row per fold: 13 s for a repeat's 3 folds.
    budget = _budget(100)
    assert budget.plan(_fold(10)) and budget.repeats == 2  # 2 repeats: 5 more folds + 16 s of prediction
    assert budget.predict_seconds(2) == pytest.approx(16) and not budget.dropped
    late = _budget(100, elapsed=40)  # 40 s already gone (reading, the first fold): one repeat only
    assert not late.plan(_fold(10)) and late.repeats == 1
    roomy = _budget(10_000)
    assert roomy.plan(_fold(1)) and roomy.repeats == MAX_REPEATS and "capped" in roomy.note


def test_a_learner_too_slow_for_the_first_repeat_is_left_out():
    budget = _budget(60)  # 48.8 s left: with slow a repeat needs 60 s + 13 s more; without it 10 s + 13 s
    assert budget.plan(_fold(30, fast=5, slow=25)) and budget.dropped == ["slow"]
    assert budget.repeats == 2 and "slow left out" in budget.note and budget.fold_seconds == [5]
    timed = _budget(60)  # the OOF pass's share of each learner is known: the dropped one's leaves the estimate
    assert timed.plan(_fold(30, fast=5, slow=25) | {"predict_seconds": {"fast": 0.02, "slow": 0.07}})
    assert timed.dropped == ["slow"] and timed.predict_per_row == pytest.approx(0.03 / 100)
    assert timed.fold_seconds == [pytest.approx(30 - 25 - 0.07)]


def test_a_first_fold_that_does_not_fit_says_so(caplog):
    budget = _budget(30)
    assert not budget.plan(_fold(20, only=20)) and budget.repeats == 1 and not budget.dropped
    assert "the first repeat alone needs about" in budget.note and "TIME=30 s" in budget.note
    assert "first repeat alone" in caplog.text


def test_each_fold_is_allotted_its_share_and_each_learner_a_share_of_what_is_left():
    budget = _budget(100, elapsed=10)  # reserve 12 s, the prediction's start 10 s: 68 s left for 3 folds
    assert budget.allot() == pytest.approx(68 * FIT_SHARE / 3, abs=0.05)
    now = time.perf_counter()
    share = Deadline.share(30, now - 6, 3)  # 6 s of a 30 s allowance gone: 8 s each for the 3 learners left
    assert share.at - now == pytest.approx(8, abs=0.05) and not share.passed() and not share.hit
    assert share.passed(step=9) and share.hit  # the step asked about would end past it: the learner stops


def test_time_left_over_widens_the_later_folds_when_a_learner_was_stopped_at_its_share():
    stopped = _budget(60)
    stopped.allowance = 5.0
    assert stopped.after_fold(0, _fold(10) | {"time_limited": ["a"]}) is False and stopped.repeats == 1
    # 48.8 s left, less the prediction's 13 s, over 2 more folds whose time outside the fits is 0: WIDEN of 17.9 s.
    assert stopped.allowance == pytest.approx(WIDEN * 35.8 / 2, abs=0.1) and "instead of 5 s" in stopped.note
    assert stopped.time_limited == {"a": 1}
    unhurried = _budget(60)
    unhurried.allowance = 5.0
    unhurried.after_fold(0, _fold(10))
    assert unhurried.allowance == 5.0 and "instead of" not in unhurried.note  # nothing stopped: nothing to widen


def test_a_learner_stopped_at_its_share_that_the_blend_gives_no_weight_is_left_out():
    budget = _budget(60)
    budget.allowance = 9.0
    row = _fold(10, fast=1, idle=4, useful=4) | {"time_limited": ["idle", "useful"],
                                                 "weights": {"fast": 0.0, "idle": 0.0, "useful": 1.0}}
    assert budget.after_fold(0, row) and budget.dropped == budget.idle == ["idle"]  # fast: weight 0, not stopped
    assert "idle left out (stopped at its share, and weight 0" in budget.note
    kept = _budget(60)
    kept.allowance = 9.0
    assert not kept.after_fold(0, row | {"weights": {"fast": 0.2, "idle": 0.3, "useful": 0.5}}) and not kept.dropped


def _rounds(name: str, model) -> int:
    if name == "catboost":
        return model.tree_count_
    return model.n_iter_ if name == "gbdt" else model.get_booster().num_boosted_rounds()


@pytest.mark.parametrize("name", ["gbdt", "catboost", "xgboost"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_learners_that_fit_in_rounds_stop_at_their_deadline(name, early_stopping):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int)
    config = load_config("titanic", [f"{name}.max_iter=200", f"{name}.early_stopping={str(early_stopping).lower()}"])
    learner, target = get_learner(name), Binary(["0", "1"])
    free = learner.fit_estimator(config, target, x, y, 0)
    late = Deadline(time.perf_counter())  # passed already
    cut = learner.fit_estimator(config, target, x, y, 0, late)
    assert _rounds(name, cut) == (CHUNK if name == "gbdt" else 1) < _rounds(name, free) and late.hit
    far = Deadline(time.perf_counter() + 3600)
    unhurried = learner.fit_estimator(config, target, x, y, 0, far)
    assert np.array_equal(free.predict_proba(x), unhurried.predict_proba(x)) and not far.hit  # nothing changes


def test_a_resumed_run_records_its_kept_folds_once():
    budget = _budget(60)
    budget.allowance = 9.0
    budget.after_fold(0, _fold(10) | {"time_limited": ["a"]})
    budget.after_fold(1, _fold(10) | {"time_limited": ["a"]})
    resumed = Budget.from_state_dict(budget.state_dict() | {"resumed": True})
    for fold in (0, 1, 2):  # folds 0 and 1 kept from before the interruption, fold 2 trained now
        resumed.after_fold(fold, _fold(10) | {"time_limited": ["a"]})
    assert resumed.time_limited == {"a": 3} and len(resumed.fold_seconds) == 3


def test_a_slow_repeat_shortens_the_plan():
    budget = _budget(100)
    assert budget.after_fold(0, _fold(10)) and budget.repeats == 2
    assert not budget.after_fold(1, _fold(30))  # three times slower
    budget.started -= 70  # as if the three folds had run
    assert budget.after_fold(2, _fold(30))
    assert budget.repeats == 1 and "stopped at 1 repeat" in budget.note
    restored = Budget.from_state_dict(json.loads(json.dumps(budget.state_dict())))
    assert restored.repeats == 1 and restored.fold_seconds == [10, 30, 30]


def _auc_gain(y):
    return lambda pred, rows: roc_auc_score(y[rows], pred[:, 0])


def test_a_bag_is_kept_only_beyond_the_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    fold_of = np.stack([rng.permutation(np.arange(600) % 5) for _ in range(4)])
    signal = y + rng.normal(0, 1, 600)
    same = np.broadcast_to(signal[None, :, None], (4, 600, 1))  # every repeat predicts alike: nothing to gain
    evidence = bag_evidence(same, fold_of, _auc_gain(y))
    assert evidence["gain"] == 0 and not evidence["kept"]
    noisy = signal[None, :, None] + rng.normal(0, 1.5, (4, 600, 1))  # independent errors per repeat: averaging helps
    evidence = bag_evidence(noisy, fold_of, _auc_gain(y))
    assert evidence["kept"] and evidence["gain"] > evidence["two_se"] > 0 and evidence["folds"] == 5


@pytest.fixture
def titanic(tmp_path):
    comp = tmp_path / "titanic"
    shutil.copytree(ROOT / "competitions" / "titanic", comp)
    return comp


def test_a_run_keeps_to_its_budget_by_its_own_record(titanic, tmp_path):
    runs = tmp_path / "runs"
    trained = run_kit("train", "--comp", str(titanic), "--runs", str(runs), "--time", "40s",
                      "--set", "learners=[gbdt,linear] cv.folds=3 gbdt.max_iter=50")
    assert trained.returncode == 0, trained.stderr
    run = runs / "titanic" / "latest"
    metrics = json.loads((run / "metrics.json").read_text())
    plan = metrics["budget"]
    assert plan["seconds"] == 40 and plan["repeats"] >= 2 and "repeat(s) of 3 folds fit" in trained.stderr
    assert metrics["cv"]["repeats"] == plan["repeats"] and len(list(run.glob("fold*.pt"))) == 3 * plan["repeats"]
    # Training, with the prediction it reserved, ends within the budget (its own clock, not this test's).
    assert metrics["seconds"] + plan["predict_seconds"] <= 40 * 1.05
    bags = metrics["bags"]
    assert metrics["served_folds"] == (3 * plan["repeats"] if bags["kept"] else 3)
    assert ("kept" if bags["kept"] else "not kept") in trained.stderr and 0.5 < bags["cv"]["mean"] <= 1
    assert len(bags["curve"]) == plan["repeats"] and (run / "bags.png").is_file()
    predicted = run_kit("predict", "--comp", str(titanic), "--runs", str(runs))
    assert predicted.returncode == 0, predicted.stderr
    assert f"from {metrics['served_folds']} folds" in predicted.stderr


def test_a_learner_that_would_overrun_its_share_is_stopped_there(titanic, tmp_path):
    """2,000 epochs of the network would take minutes a fold; each fold's share of TIME=60s ends it."""
    runs = tmp_path / "runs"
    trained = run_kit("train", "--comp", str(titanic), "--runs", str(runs), "--time", "60s", "--set",
                      "learners=[net,linear] cv.folds=3 train.epochs=2000 train.patience=2000")
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((runs / "titanic" / "latest" / "metrics.json").read_text())
    plan = metrics["budget"]
    assert 0 < plan["allowance"] < 60 / 3 and plan["time_limited"] == {"net": 3 * plan["repeats"]}
    # The first fold's blend weights, which would leave net out at weight 0, were fitted on its OOF predictions.
    assert set(plan["first_weights"]) == {"net", "linear"} and sum(plan["first_weights"].values()) == pytest.approx(1)
    assert plan["first_weights"]["net"] > 0 and plan["idle"] == []
    assert "another epoch would end past its share of the budget" in trained.stderr
    assert trained.stderr.index("linear fitted") < trained.stderr.index("fold 0 epoch 1/")  # it cannot stop: first
    assert "net stopped at the end of its share of the budget" in trained.stderr
    assert metrics["seconds"] + plan["predict_seconds"] <= 60 * 1.05


def test_a_resumed_run_keeps_its_plan(titanic, tmp_path):
    runs = tmp_path / "runs"
    args = ["--comp", str(titanic), "--runs", str(runs), "--time", "20s", "--set", "learners=[linear] cv.folds=3"]
    assert run_kit("train", *args).returncode == 0
    run = runs / "titanic" / "latest"
    plan = json.loads((run / "plan.json").read_text())
    last = 3 * plan["repeats"] - 1
    for path in [run / "metrics.json", *run.glob(f"fold{last}.*")]:  # as if stopped during the last fold
        path.unlink()
    resumed = run_kit("train", *args, "--resume", run.resolve().name)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with the plan this run was given" in resumed.stderr
    assert "budget: a fold takes" not in resumed.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cv"]["repeats"] == plan["repeats"] and metrics["cv"]["folds"] == last + 1


def test_without_a_budget_nothing_is_planned(titanic, tmp_path):
    trained = run_kit("train", "--comp", str(titanic), "--runs", str(tmp_path / "runs"),
                      "--set", "learners=[linear] cv.folds=3")
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads((tmp_path / "runs" / "titanic" / "latest" / "metrics.json").read_text())
    assert "budget" not in metrics and metrics["served_folds"] == 3 and "budget:" not in trained.stderr


def test_a_duration_that_is_not_one_is_refused(titanic, tmp_path):
    refused = run_kit("train", "--comp", str(titanic), "--runs", str(tmp_path / "runs"), "--time", "ten minutes")
    assert refused.returncode != 0 and "TIME='ten minutes' is not a duration" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "runs").exists()

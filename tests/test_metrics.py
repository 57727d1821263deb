"""The metric registry against scikit-learn on fixed inputs, its directions, and where the metric decides:
early stopping, the binary decision threshold, fitting metrics per target type, folds by group and by time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from kit.batches import TensorBatches
from kit.config import TrainConfig
from kit.ensemble import TargetInverse
from kit.errors import KitError
from kit.folds import stratified_folds, time_folds
from kit.metrics import REGISTRY, get_metric
from kit.objective import Objective
from kit.report import decision_threshold
from kit.target import Binary, Multiclass, Regression, fitting
from kit.trainer import fit

Y2 = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
P2 = np.array([0.2, 0.7, 0.4, 0.3, 0.9, 0.6, 0.1, 0.8, 0.55, 0.45])
PROBS2 = np.stack([1 - P2, P2], axis=1)
Y3 = np.array([0, 1, 2, 2, 1, 0, 2, 1])
PROBS3 = np.array([[.7, .2, .1], [.1, .6, .3], [.2, .2, .6], [.3, .3, .4], [.5, .4, .1], [.6, .3, .1],
                   [.1, .1, .8], [.2, .5, .3]])
YV = np.array([3.0, 10.0, 0.5, 7.0, 120.0])
V = np.array([2.5, 12.0, 0.7, 6.0, 100.0])


@pytest.mark.parametrize(("name", "expected"), [
    ("accuracy", skm.accuracy_score(Y2, P2 >= 0.5)),
    ("balanced_accuracy", skm.balanced_accuracy_score(Y2, P2 >= 0.5)),
    ("roc_auc", skm.roc_auc_score(Y2, P2)),
    ("log_loss", skm.log_loss(Y2, P2)),
    ("f1", skm.f1_score(Y2, P2 >= 0.5)),
    ("macro_f1", skm.f1_score(Y2, P2 >= 0.5, average="macro")),
    ("mcc", skm.matthews_corrcoef(Y2, P2 >= 0.5)),
    ("qwk", skm.cohen_kappa_score(Y2, (P2 >= 0.5).astype(int), weights="quadratic")),
])
def test_binary_metrics_equal_scikit_learn(name, expected):
    assert get_metric(name, "binary").score(Y2, PROBS2) == pytest.approx(expected, abs=1e-12)


def test_multiclass_and_regression_metrics_equal_scikit_learn():
    labels = PROBS3.argmax(1)
    metric = {name: get_metric(name, "multiclass") for name in ("log_loss", "roc_auc", "macro_f1", "qwk")} | {
        name: get_metric(name, "regression") for name in ("rmse", "rmsle", "mae", "r2")}
    assert metric["log_loss"].score(Y3, PROBS3) == pytest.approx(skm.log_loss(Y3, PROBS3))
    assert metric["roc_auc"].score(Y3, PROBS3) == pytest.approx(skm.roc_auc_score(Y3, PROBS3, multi_class="ovr"))
    assert metric["macro_f1"].score(Y3, PROBS3) == pytest.approx(skm.f1_score(Y3, labels, average="macro"))
    assert metric["qwk"].score(Y3, PROBS3) == pytest.approx(skm.cohen_kappa_score(Y3, labels, weights="quadratic"))
    values = V[:, None]
    assert metric["rmse"].score(YV, values) == pytest.approx(np.sqrt(skm.mean_squared_error(YV, V)))
    assert metric["rmsle"].score(YV, values) == pytest.approx(np.sqrt(skm.mean_squared_log_error(YV, V)))
    assert metric["mae"].score(YV, values) == pytest.approx(skm.mean_absolute_error(YV, V))
    assert metric["r2"].score(YV, values) == pytest.approx(skm.r2_score(YV, V))
    assert metric["rmsle"].score(YV, np.array([[-5.0]] * 5)) == metric["rmsle"].score(YV, np.zeros((5, 1)))


def test_mean_roc_auc_is_the_mean_of_the_class_columns_aucs():
    """Kaggle's mean column-wise ROC AUC (Plant Pathology) against scikit-learn's macro AUC of one-hot truth."""
    mean_auc = get_metric("mean_roc_auc", "multiclass")
    assert mean_auc.score(Y3, PROBS3) == pytest.approx(skm.roc_auc_score(np.eye(3)[Y3], PROBS3, average="macro"))
    assert get_metric("mean_roc_auc", "binary").score(Y2, PROBS2) == pytest.approx(skm.roc_auc_score(Y2, P2))
    assert mean_auc.greater_is_better and mean_auc.needs == "proba"


def test_directions_and_what_each_metric_consumes():
    lower = {"log_loss", "rmse", "rmsle", "mae"}
    for name, metric in REGISTRY.items():
        assert metric.greater_is_better == (name not in lower), name
        assert metric.better(1.0, 0.5) == metric.greater_is_better
    assert {m.needs for m in REGISTRY.values()} == {"label", "proba", "value"}
    assert REGISTRY["roc_auc"].needs == "proba" and REGISTRY["f1"].needs == "label"
    assert REGISTRY["rmse"].surrogate == "squared_error" and REGISTRY["roc_auc"].surrogate == "log_loss"


def test_a_metric_that_cannot_score_the_target_type_names_the_ones_that_fit():
    with pytest.raises(KitError, match="metric 'rmse' cannot score a multiclass target; metrics that fit: accuracy"):
        get_metric("rmse", "multiclass")
    with pytest.raises(KitError, match="cannot score a regression target; metrics that fit: rmse, rmsle, mae, r2"):
        get_metric("roc_auc", "regression")
    with pytest.raises(KitError, match="unknown metric 'auc'; known metrics: accuracy"):
        get_metric("auc", "binary")
    assert fitting(Regression) == ["rmse", "rmsle", "mae", "r2"]
    assert "f1" in fitting(Binary) and "f1" not in fitting(Multiclass)


def test_a_competition_brings_its_own_metric_file(tmp_path):
    (tmp_path / "gini.py").write_text("from sklearn.metrics import roc_auc_score\n"
                                      "GREATER_IS_BETTER = True\nNEEDS = 'proba'\n"
                                      "def score(y, p):\n    return 2 * roc_auc_score(y, p) - 1\n")
    gini = get_metric("gini.py", "binary", tmp_path)
    assert gini.score(Y2, PROBS2) == pytest.approx(2 * skm.roc_auc_score(Y2, P2) - 1)
    (tmp_path / "bad.py").write_text("def score(y, p):\n    return 0\n")
    with pytest.raises(KitError, match="must define score"):
        get_metric("bad.py", "binary", tmp_path)


def test_early_stopping_on_a_metric_to_minimise_keeps_its_lowest_epoch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] + 0.8 * torch.randn(256, generator=g) > 0).long()  # noisy: the log loss turns up late
    train, valid = TensorBatches(x[:160], y[:160], 32, torch.device("cpu"), True), \
        TensorBatches(x[160:], y[160:], 64, torch.device("cpu"), False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    cfg = TrainConfig(epochs=12, batch_size=32, lr=3e-2, warmup_epochs=0, patience=12, weight_decay=0)
    result = fit(model, train, valid, cfg, seed=0, objective=Objective(get_metric("log_loss", "multiclass"), {}))
    scores = [row["valid_score"] for row in result.history]
    assert result.best_epoch == int(np.argmin(scores)) + 1 and result.best_score == min(scores)
    assert result.best_epoch != int(np.argmax(scores)) + 1


def test_the_binary_threshold_is_chosen_on_oof_rows_and_cross_fitted():
    f1, binary = get_metric("f1", "binary"), Binary(["0", "1"])
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    p = np.clip(0.15 + 0.3 * y + rng.normal(0, 0.12, 400), 0, 1)  # every p < 0.5: argmax never says positive
    probs = np.stack([1 - p, p], 1)
    chosen = binary.best_threshold(f1, y, probs)
    assert f1.score(y, probs, chosen) > f1.score(y, probs) + 0.3 and 0.2 < chosen < 0.5
    fold_of = np.tile(np.arange(4), 100)[None]
    served, per_fold = decision_threshold(f1, binary, y, probs[None], fold_of)
    assert served == chosen and sorted(per_fold) == [0, 1, 2, 3]
    assert per_fold[0] == binary.best_threshold(f1, y[fold_of[0] != 0], probs[fold_of[0] != 0])
    assert decision_threshold(get_metric("roc_auc", binary), binary, y, probs[None], fold_of) == (None, None)


def test_the_rmsle_target_transform_round_trips_in_numpy_and_in_the_graph():
    y, log1p = np.array([0.0, 0.5, 3.0, 1e5]), Regression(transform="log1p")
    assert np.allclose(log1p.inverse(log1p.forward(y)), y, rtol=1e-12)
    graph = TargetInverse(nn.Identity(), "log1p")
    assert torch.allclose(graph(torch.tensor(log1p.forward(y))[:, None])[:, 0], torch.tensor(y), rtol=1e-6)
    with pytest.raises(KitError, match="needs target values of 0 or more"):
        log1p.forward(np.array([1.0, -2.0]))
    assert get_metric("rmsle").transform == "log1p" and get_metric("rmse").transform == "none"


def test_group_folds_never_split_a_group():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 60, 500).astype(str)
    y = rng.integers(0, 2, 500)
    splits = stratified_folds(y, 5, seed=3, groups=groups)
    seen = np.zeros(500, int)
    for train_idx, valid_idx in splits:
        assert not set(groups[train_idx]) & set(groups[valid_idx])
        seen[valid_idx] += 1
    assert (seen == 1).all()
    with pytest.raises(KitError, match="needs at least 5 groups"):
        stratified_folds(y[:10], 5, 0, groups=np.array(["a", "b"] * 5))


def test_time_folds_never_validate_on_the_past():
    rng = np.random.default_rng(2)
    dates = pd.Series(pd.date_range("2020-01-01", periods=300, freq="D").strftime("%Y-%m-%d").to_numpy()[
        rng.permutation(300)])
    stamps = pd.to_datetime(dates)
    splits = time_folds(dates, 4)
    assert len(splits) == 4
    for k, (train_idx, valid_idx) in enumerate(splits):
        assert stamps[train_idx].max() < stamps[valid_idx].min()  # the past trains, the next block validates
        assert k == 0 or len(train_idx) > len(splits[k - 1][0])  # each fold trains on more of the past
    first_block = set(range(300)) - set(np.concatenate([v for _, v in splits]))
    assert stamps[list(first_block)].max() < stamps[splits[0][1]].min()  # the earliest block is never validated

"""Any tabular competition from its files: `kit new`, then train, predict and export with no edit in between, on
scikit-learn's bundled tables written as Kaggle-shaped folders (a regression scored by RMSLE, a binary table scored
by ROC AUC, a multiclass table scored by log loss with one column per class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_kit
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from kit import runtime
from kit.metrics import get_metric

FAST = "cv.folds=3 train.epochs=3 gbdt.max_iter=60 catboost.max_iter=200"


def write_competition(folder: Path, frame: pd.DataFrame, target: str, sample_value) -> Path:
    """train.csv / test.csv (80/20, the target withheld) / sample_submission.csv, ids shuffled."""
    rng = np.random.default_rng(0)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    frame.insert(0, "row_id", rng.permutation(len(frame)) + 1000)
    test = frame.iloc[: len(frame) // 5]
    folder.mkdir(parents=True)
    frame.iloc[len(frame) // 5:].to_csv(folder / "train.csv", index=False)
    test.drop(columns=[target]).to_csv(folder / "test.csv", index=False)
    sample = pd.DataFrame({"row_id": test["row_id"]})
    for column, value in (sample_value if isinstance(sample_value, dict) else {target: sample_value}).items():
        sample[column] = value
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


def new_and_train(tmp: Path, data: Path, name: str, metric: str, extra: str = "") -> Path:
    """`kit new` then `kit train` and `kit predict` on the written config, unchanged; the run folder."""
    comps, runs = tmp / "competitions", tmp / "runs"
    made = run_kit("new", "--comp", name, "--data", str(data), "--metric", metric, "--competitions", str(comps))
    assert made.returncode == 0, made.stderr
    comp = str(comps / name)
    trained = run_kit("train", "--comp", comp, "--runs", str(runs), "--set", f"{FAST} {extra}".strip())
    assert trained.returncode == 0, trained.stderr
    predicted = run_kit("predict", "--comp", comp, "--runs", str(runs))
    assert predicted.returncode == 0, predicted.stderr
    for log in (trained.stderr, predicted.stderr):  # the OOF and predict bars count rows, from their first frame
        assert "rows/s" in log and "images" not in log
    return runs / name / "latest"


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regression")
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    frame = x.assign(sex=np.where(x["sex"] > 0, "M", "F"), progression=y)
    frame.loc[frame.index % 7 == 0, "bmi"] = np.nan  # gaps: imputed, with a missing indicator
    data = write_competition(tmp / "data", frame, "progression", 150.0)
    run = new_and_train(tmp, data, "diabetes", "rmsle")
    exported = run_kit("export", "--comp", str(tmp / "competitions" / "diabetes"), "--runs", str(tmp / "runs"),
                       "--exports", str(tmp / "exports"))
    assert exported.returncode == 0, exported.stderr
    return tmp, data, run


def test_a_regression_trains_on_log1p_for_rmsle_and_submits_values(regression):
    tmp, data, run = regression
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric"]["name"] == "rmsle" and metrics["target"] == {
        "column": "progression", "type": "regression", "transform": "log1p"}
    oof = pd.read_csv(run / "oof.csv")
    assert metrics["cv"]["oof"] == pytest.approx(get_metric("rmsle", "regression").score(oof["target"].to_numpy(),
                                                                        oof[["value"]].to_numpy()), rel=1e-6)
    assert metrics["cv"]["oof"] < 0.6  # the mean guess scores about 0.75 on this table
    kinds = json.loads((run / "fold0.json").read_text())["preprocessing"]["kinds"]
    assert kinds["sex"]["kind"] == "categorical" and kinds["bmi"]["kind"] == "numeric"
    submission = pd.read_csv(run / "submission.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(submission.columns) == list(sample.columns) and set(submission["row_id"]) == set(sample["row_id"])
    assert submission["progression"].between(20, 400).all()  # values in the target's units, not log1p


def test_the_regression_blend_is_the_oof_mean_in_log_space(regression):
    _, _, run = regression
    metrics = json.loads((run / "metrics.json").read_text())
    oof = pd.read_csv(run / "oof.csv")
    names = list(metrics["blend"]["weights"])
    logs = np.log1p(oof[[f"{n}_value" for n in names]].to_numpy())
    weights = np.array(list(metrics["blend"]["weights"].values()))
    if metrics["blend"]["method"] == "mean":
        assert np.allclose(oof["value"], np.expm1(logs @ weights), rtol=1e-5)
    assert metrics["learners"].keys() == {"net", "gbdt", "catboost", "linear"}


def test_regression_exports_serve_the_submission_within_1e_4(regression):
    tmp, data, run = regression
    export = tmp / "exports" / "diabetes"
    meta = json.loads((export / "meta.json").read_text())
    assert meta["output"]["shape"] == ["N", 1] and meta["target"]["transform"] == "log1p"
    assert max(meta["parity"]["torchscript_max_abs_diff"], meta["parity"]["onnx_max_abs_diff"]) < 1e-4 * 400
    rows = pd.read_csv(data / "test.csv").drop(columns=["row_id"])
    expected = pd.read_csv(run / "submission.csv")["progression"].to_numpy()
    for backend in ("onnx", "torchscript"):
        model = runtime.load(export, backend=backend)
        for n in (1, 7):
            assert np.allclose(model.predict(rows.iloc[:n]), expected[:n], rtol=1e-4)
        with pytest.raises(Exception, match="predicts values"):
            model.predict_proba(rows.iloc[:1])


def test_an_auc_competition_submits_the_positive_probability(tmp_path):
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = x.iloc[:, :8].assign(diagnosis=np.where(y == 1, "benign", "malignant"))
    data = write_competition(tmp_path / "data", frame, "diagnosis", 0.5)
    run = new_and_train(tmp_path, data, "cancer", "roc_auc", "learners=[gbdt,catboost,linear]")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric"]["name"] == "roc_auc" and metrics["cv"]["mean"] > 0.95
    submission = pd.read_csv(run / "submission.csv")
    assert list(submission.columns) == ["row_id", "diagnosis"]
    p = submission["diagnosis"]
    assert p.between(0, 1).all() and p.nunique() > 20  # probabilities, not 0/1 labels
    assert metrics["config"]["classes"] == ["benign", "malignant"]  # sorted labels: the last is the positive one
    assert (p.to_numpy() > 0.5).mean() == pytest.approx((y == 0).mean(), abs=0.1)  # p(malignant)


def test_a_multiclass_log_loss_competition_submits_a_column_per_class_in_the_samples_order(tmp_path):
    x, y = load_wine(return_X_y=True, as_frame=True)
    frame = x.assign(cultivar=[f"class_{v}" for v in y])
    order = ["class_2", "class_0", "class_1"]
    data = write_competition(tmp_path / "data", frame, "cultivar", {c: 1 / 3 for c in order})
    run = new_and_train(tmp_path, data, "wine", "log_loss", "learners=[catboost,linear]")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric"] == {"name": "log_loss", "greater_is_better": False, "needs": "proba",
                                 "surrogate": "log_loss"}
    assert metrics["cv"]["mean"] < 0.3  # ln 3 = 1.10 for the uniform guess
    submission = pd.read_csv(run / "submission.csv")
    assert list(submission.columns) == ["row_id", *order]
    assert np.allclose(submission[order].sum(axis=1), 1, atol=1e-5)


def test_a_metric_that_cannot_score_the_target_is_refused_before_any_run_folder(tmp_path):
    result = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path / "runs"), "--set", "metric=rmse")
    assert result.returncode == 2
    assert "metric 'rmse' cannot score a binary target; metrics that fit: accuracy, balanced_accuracy, roc_auc" \
        in result.stderr
    assert not (tmp_path / "runs").exists()

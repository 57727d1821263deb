"""Tabular learners on the same folds, their blend on out-of-fold predictions, repeated CV and group features."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CPU_ENV, ROOT, TITANIC, run_kit

from kit import blend, runs, runtime
from kit.config import load_config
from kit.encoding import encode, fit_encoding
from kit.ensemble import Blend
from kit.errors import KitError
from kit.folds import make_splits
from kit.learners import get_learner
from kit.report import serving_cost
from kit.target import Binary, target_class
from kit.tasks import get_task

FAST = "learners=[gbdt,linear] cv.folds=3 gbdt.max_iter=30"  # no network: seconds per run


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    """Titanic with fitted (not mean) blend weights over gbdt and linear, trained and exported."""
    tmp = tmp_path_factory.mktemp("weighted")
    settings = f"{FAST} blend=weights"
    train = run_kit("train", "--comp", "titanic", "--runs", str(tmp / "runs"), "--set", settings)
    assert train.returncode == 0, train.stderr
    export = run_kit("export", "--comp", "titanic", "--runs", str(tmp / "runs"), "--exports", str(tmp / "exports"),
                     "--set", settings)
    assert export.returncode == 0, export.stderr
    return tmp, runs.find_run("titanic", None, tmp / "runs")


def test_a_rows_own_label_never_reaches_its_group_features():
    spec = load_config("titanic").features
    frame = pd.DataFrame({"Family": ["a", "a", "a", "b", "c"], "Ticket": ["1", "1", "2", "2", "3"],
                          "Age": [1.0] * 5, "Title": ["Mr"] * 5, "LogFarePerPerson": [1.0] * 5,
                          "FamilySize": [1.0] * 5, **{c: ["x"] * 5 for c in spec.categorical if c != "Title"}})
    y = np.array([1, 0, 1, 0, 1])
    flipped = y.copy()
    flipped[0] = 0
    before = encode(frame, fit_encoding(frame, spec, y, 2), own=y)
    after = encode(frame, fit_encoding(frame, spec, flipped, 2), own=flipped)
    assert np.array_equal(before[0], after[0])  # row 0's own label changed: its features did not
    assert not np.array_equal(before[1], after[1])  # its family members see it: the features are live
    # FamilyRate, FamilyRate_known of row 1: its family's other rows, 0 and 2, both survived; then one of them
    assert (before[1, 0], before[1, 1], after[1, 0], after[1, 1]) == (1.0, 2, 0.5, 2)


def test_validation_group_features_ignore_validation_labels():
    """Through the CV driver's own steps (splits, fit on the training part, features of the validation part): no
    validation label, flipped, moves a validation row's features; a training label does."""
    config = load_config("titanic")
    task = get_task(config)
    train = task.load("train")
    part_idx, valid_idx = make_splits(config, train)[0]

    def valid_features(y):
        train.y = y
        return task.features(train.subset(valid_idx), task.fit(train.subset(part_idx)), train=False)

    y = train.y.copy()
    base = valid_features(y.copy())
    flipped = y.copy()
    flipped[valid_idx] = 1 - flipped[valid_idx]
    assert np.array_equal(valid_features(flipped), base)
    families = train.data["Family"].to_numpy()
    shared = [i for i in part_idx if families[i] in set(families[valid_idx])]
    flipped = y.copy()
    flipped[shared] = 1 - flipped[shared]
    assert not np.array_equal(valid_features(flipped), base)


def test_blend_weights_come_from_oof_predictions_and_its_cv_is_cross_fitted(weighted_run):
    _, run_dir = weighted_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    oof = pd.read_csv(run_dir / "oof.csv")
    probs = np.stack([oof[[f"{name}_prob_0", f"{name}_prob_1"]].to_numpy() for name in ("gbdt", "linear")], 1)
    y, fold = oof["target"].to_numpy(), oof["fold"].to_numpy()
    assert metrics["blend"]["method"] == "weights"
    assert np.allclose(list(metrics["blend"]["weights"].values()), blend.fit_weights(probs, y, values=False), atol=1e-6)
    for k in range(3):  # each fold's served OOF rows: weights fitted on the other folds' rows only
        rows = fold == k
        w = blend.fit_weights(probs[~rows], y[~rows], values=False)
        assert np.allclose(oof.loc[rows, ["prob_0", "prob_1"]].to_numpy(), blend.blended(probs[rows], w), atol=1e-5)
    assert metrics["cv"]["oof"] == pytest.approx(float((oof["pred"] == oof["target"]).mean()))


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_the_exported_graph_is_every_learner_of_every_fold_blended(weighted_run, backend):
    """The export equals sum_l w_l * mean over folds of learner l's probabilities, computed from the checkpoints."""
    tmp, run_dir = weighted_run
    task = get_task(runs.run_config(run_dir))
    weights = json.loads((run_dir / "metrics.json").read_text())["blend"]["weights"]
    rows = pd.read_csv(TITANIC / "test.csv").head(7)
    samples = task.load("test").subset(np.arange(7))
    expected = 0
    for saved, meta in runs.load_folds(run_dir):
        x = torch.from_numpy(task.features(samples, meta["preprocessing"], train=False))
        for name, state in saved.items():
            with torch.no_grad():
                expected = expected + weights[name] * get_learner(name).rebuild(state, task, {})(x).numpy() / 3
    got = runtime.load(tmp / "exports" / "titanic", backend=backend, trust_code=True).predict_proba(rows)
    assert min(weights.values()) < 0.45 and np.abs(got - expected).max() <= 1e-4


def test_a_learner_of_weight_zero_is_not_served_and_changes_nothing():
    torch.manual_seed(0)
    a, b, c = (torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1)) for _ in range(3))
    x = torch.randn(5, 3)
    served = Blend({"a": a, "b": b, "c": c}, [0.25, 0.0, 0.75])
    assert list(served.learners) == ["a", "c"]
    with torch.no_grad():
        assert torch.equal(served(x), (torch.stack([a(x), c(x)], 1) * torch.tensor([0.25, 0.75])[:, None]).sum(1))
        assert torch.equal(served(x), Blend({"a": a, "b": b, "c": c}, None)(x)[:, [0, 2]].mul(
            torch.tensor([0.25, 0.75])[:, None]).sum(1))


def test_a_weight_the_solver_leaves_at_rounding_noise_is_exactly_zero():
    """SLSQP ends a dominated learner's weight at 1e-16 rather than 0 (the million-row table: gbdt 6e-17, so all 20
    models were served instead of 10): such a weight is 0, and the learner is not served."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = 1 / (1 + np.exp(-(3 * (y - 0.5) + rng.standard_normal(2000))))
    flat = np.clip(0.5 + 0.05 * rng.standard_normal(2000), 0.01, 0.99)
    weak = 1 / (1 + np.exp(-(1.5 * (y - 0.5) + rng.standard_normal(2000))))
    p1 = np.stack([good, flat, weak], 1)
    assert blend.fit_weights(np.stack([1 - p1, p1], 2), y, values=False).tolist() == [1.0, 0.0, 0.0]


def test_the_serving_cost_counts_the_learners_served_and_their_share_of_the_oof_pass(weighted_run):
    """Each fold records every learner's seconds of its OOF pass; the serving line leaves out what weight 0 leaves
    out of the graph."""
    _, run_dir = weighted_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for row in metrics["folds"]:
        assert set(row["predict_seconds"]) == {"gbdt", "linear"}
        assert 0 < sum(row["predict_seconds"].values()) <= row["oof_seconds"]
    rows = [{"valid_rows": 100, "oof_seconds": 10.0, "predict_seconds": {"gbdt": 6.0, "linear": 2.0}}] * 3
    assert serving_cost(rows, 5, {"gbdt": 0.0, "linear": 1.0}, "rows") == {
        "models": 5, "folds": 5, "learners": 1, "unit": "rows", "per_second": 5.0}  # 100 rows in 4 s, / 5 folds
    assert serving_cost(rows, 5, {"gbdt": 0.5, "linear": 0.5}, "rows")["per_second"] == 2.0


def test_eager_prediction_runs_a_table_in_chunks_equal_to_one_pass(weighted_run, monkeypatch):
    """`make predict` and the OOF pass feed the ensemble CHUNK_ROWS rows at a time, like kit.runtime: the same
    encoded rows as one pass, in order."""
    from kit.tasks import tabular

    _, run_dir = weighted_run
    task = get_task(runs.run_config(run_dir))
    _, states = runs.load_ensemble(run_dir, task)
    samples = task.load("test")
    whole = torch.cat(list(task.batches(samples, states)))
    monkeypatch.setattr(tabular, "CHUNK_ROWS", 100)
    chunks = list(task.batches(samples, states))
    assert [len(c) for c in chunks] == [100, 100, 100, 100, 18] and torch.equal(torch.cat(chunks), whole)


def test_repeated_cv_reproduces_exactly_and_repeats_differ(tmp_path):
    def train(name):
        result = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path / name), "--set", f"{FAST} cv.repeats=2")
        assert result.returncode == 0, result.stderr
        return runs.find_run("titanic", None, tmp_path / name)

    a, b = train("a"), train("b")
    assert (a / "oof.csv").read_bytes() == (b / "oof.csv").read_bytes()
    folds = pd.read_csv(a / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2] and sorted(folds["fold_r1"].unique()) == [3, 4, 5]
    assert (folds["fold"] != folds["fold_r1"] - 3).any()  # the second repeat is another split
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["cv"]["repeats"] == 2 and len(metrics["folds"]) == 6 and metrics["cv"]["repeat_sd"] >= 0
    compared = run_kit("compare", "--comp", "titanic", "--runs", str(tmp_path / "a"), a.name, str(b))
    assert compared.returncode == 0 and "within the noise" in compared.stdout
    assert "B's gain over A (accuracy, higher is better): +0.0000" in compared.stdout


def test_unknown_learners_give_one_clear_message(tmp_path):
    unknown = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path), "--set", "learners=[net,svm]")
    assert unknown.returncode == 2 and "unknown learner 'svm'; known learners: catboost, gbdt" in unknown.stderr
    assert not (tmp_path / "titanic").exists()


@pytest.mark.parametrize(("module", "learner", "needs", "install"), [
    ("sklearn.ensemble", "gbdt", "sklearn.ensemble.HistGradientBoostingClassifier", "pip install 'scikit-learn"),
    ("catboost", "catboost", "catboost.CatBoostClassifier", "pip install catboost")])
def test_a_missing_package_is_refused_before_any_run_naming_the_install(tmp_path, module, learner, needs, install):
    blocker = ("import importlib.abc, runpy, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               f"        if name == {module!r}: raise ImportError('No module named {module}')\n"
               "sys.meta_path.insert(0, Block())\n"
               "runpy.run_module('kit', run_name='__main__')\n")
    missing = subprocess.run([sys.executable, "-c", blocker, "train", "--comp", "titanic", "--runs", str(tmp_path),
                              "--set", f"{FAST} learners=[{learner},linear]"], cwd=ROOT, capture_output=True,
                             text=True, env=CPU_ENV, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"learner '{learner}' needs {needs}" in missing.stderr
    assert install in missing.stderr and not list(tmp_path.rglob("config.yaml"))  # refused before any run


def test_the_image_task_keeps_its_single_network():
    assert load_config("food11").learners == ["net"]
    with pytest.raises(KitError, match="an image competition trains its network only"):
        load_config("food11", ["learners=[net,gbdt]"])


@pytest.mark.parametrize(("max_rows", "seen"), [(120, 120), (0, 1000)])
def test_catboost_fits_on_at_most_max_rows_of_the_fold(max_rows, seen):
    """catboost.max_rows caps the rows CatBoost learns from (a sample of the fold's training part); its first tree's
    leaf weights count them."""
    config = load_config("titanic", [f"catboost.max_rows={max_rows}", "catboost.max_iter=5"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 4)).astype(np.float32)
    model = get_learner("catboost").fit_estimator(config, Binary(["0", "1"]), x, (x[:, 0] > 0).astype(int), 0)
    assert model.get_leaf_weights()[: 2**config.catboost.depth].sum() == seen


@pytest.mark.parametrize(("max_rows", "seen"), [(120, 120), (0, 1000)])
def test_gbdt_fits_on_at_most_max_rows_of_the_fold(max_rows, seen):
    """gbdt.max_rows caps the rows HistGradientBoosting learns from; its first tree's root counts them."""
    config = load_config("titanic", [f"gbdt.max_rows={max_rows}", "gbdt.max_iter=5"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 4)).astype(np.float32)
    model = get_learner("gbdt").fit_estimator(config, Binary(["0", "1"]), x, (x[:, 0] > 0).astype(int), 0)
    assert model._predictors[0][0].nodes["count"][0] == seen


def test_a_table_is_typed_chunk_by_chunk_and_no_writing_changes(tmp_path, monkeypatch):
    """Numbers are read once as float64; a column that is numbers in one chunk and not in another is text in all
    of them, each value as written; the id and target stay text."""
    from kit.tasks import tabular

    monkeypatch.setattr(tabular, "READ_ROWS", 2)
    path = tmp_path / "train.csv"
    pd.DataFrame({"id": ["007", "8", "9", "10", "11"], "x": ["1", "2.5", "", "3.0", "1e-05"],
                  "late": ["1", "2.5", "3", "x", "4"], "c": ["a", "b", "a", "b", ""], "y": ["1", "0", "1", "0", "1"]},
                 ).to_csv(path, index=False)
    config = load_config("titanic", ["features.raw_numeric=[]", "features.raw_text=[]", "features.code=null",
                                     "data.id=id", "target.column=y"])
    frame = tabular.read_table(path, config, labelled=True)
    assert frame["x"].dtype == np.float64 and frame["x"].tolist()[:2] == [1.0, 2.5]
    assert frame["late"].tolist() == ["1", "2.5", "3", "x", "4"]  # typed in chunks 1 and 3 only: read again
    assert frame["id"].tolist() == ["007", "8", "9", "10", "11"] and frame["y"].tolist() == ["1", "0", "1", "0", "1"]
    assert frame["c"].fillna("").tolist() == ["a", "b", "a", "b", ""]


@pytest.mark.parametrize("target_type", ["binary", "regression"])
def test_the_linear_learner_fits_the_encoded_float32_rows_without_a_float64_copy(target_type):
    """LogisticRegression solves in the float32 it is given (no float64 copy of a fold's one-hot columns, the
    largest array of a big table's fit); RidgeCV converts for itself and hands back float32 coefficients."""
    config = load_config("titanic")
    target = target_class(target_type)(["0", "1"] if target_type == "binary" else [])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) if target_type == "binary" else x[:, 0] * 2.0
    model = get_learner("linear").fit_estimator(config, target, x, y, 0)
    assert model.coef_.dtype == np.float32
    assert type(model).__name__ == ("LogisticRegression" if target_type == "binary" else "RidgeCV")


def test_a_fold_frees_each_encoding_once_no_learner_left_reads_it():
    """The fold's full encoding lives until the last selection made from it; a selection until the last learner
    that reads it; without `needed` (make tune's jobs) everything is kept for the next trial."""
    from kit.cv import fold_job

    config = load_config("titanic", ["features.raw_numeric=[]", "features.raw_text=[]", "features.code=null",
                                     "features.numeric=[]", "features.categorical=[]"])
    task = get_task(config)
    train = task.load("train")
    job = fold_job(task, config, train, make_splits(config, train)[0], 0, ROOT)
    job.needed = {"ordinal", "onehot"}
    ordinal = job.features("ordinal")
    assert "encoded" in job.__dict__  # the one-hot selection is still to be made from it
    onehot = job.features("onehot")
    assert "encoded" not in job.__dict__ and set(job.selected) == {"ordinal", "onehot"}
    job.needed = {"onehot"}
    job.forget()
    assert set(job.selected) == {"onehot"} and job.features("onehot") is onehot
    job.needed = None
    assert job.features("ordinal").tolist() == ordinal.tolist() and "encoded" in job.__dict__


def _ranker_and_calibrated(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """y, and OOF probabilities [1, N, 2 learners, 2] of a learner that ranks almost perfectly but barely moves
    from 0.5 (poor log loss) and one that is calibrated but ranks poorly: log-loss weights favour the second, ROC AUC
    the first."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    ranker = 0.5 + 0.01 * (y + 0.1 * rng.standard_normal(n))
    calibrated = 1 / (1 + np.exp(-(2.0 * (y - 0.5) + 1.5 * rng.standard_normal(n))))
    p1 = np.stack([ranker, calibrated], 1)
    return y, np.stack([1 - p1, p1], 2)[None]


def test_ensemble_selection_is_kept_when_it_beats_the_fitted_weights_in_the_metric_beyond_the_noise(monkeypatch):
    """Ensemble selection optimises the metric itself (ROC AUC here), where the fitted weights minimise log loss:
    cross-fitted, it wins by far more than two standard errors, so `auto` serves it; its weights are counts of 25."""
    from sklearn.metrics import roc_auc_score

    y, preds = _ranker_and_calibrated()
    fold_of = (np.arange(len(y)) % 5)[None]

    def gain(pred, rows):
        return roc_auc_score(y[rows], pred[:, 1])

    mix = blend.choose(preds, y, fold_of, "auto", gain, values=False)
    assert mix["method"] == "greedy" and mix["weights"][0] > 0.9
    assert mix["gain_of_selection"]["mean"] > 5 * mix["gain_of_selection"]["two_se"] > 0
    assert all(round(w * blend.ROUNDS) == w * blend.ROUNDS for w in mix["weights"])
    own = blend.select(preds[0], np.ones(len(y), bool), gain, rounds=1)
    assert own.tolist() == [1.0, 0.0]  # the first round takes the best single learner
    monkeypatch.setattr(blend, "SELECT_ROWS", 300)  # a large table's selection scores a sample of its rows
    assert blend.select(preds[0], np.ones(len(y), bool), gain).tolist() == mix["weights"]
    assert blend.choose(preds, y, fold_of, "weights", gain, values=False)["method"] == "weights"


def test_ensemble_selection_that_does_not_beat_the_noise_is_not_kept():
    """Two learners with the same predictions: every blend scores the same on every fold, a gain of exactly 0,
    which is not beyond the noise: the plain mean stays."""
    from sklearn.metrics import roc_auc_score

    y, preds = _ranker_and_calibrated()
    same = np.repeat(preds[:, :, 1:], 2, axis=2)
    fold_of = (np.arange(len(y)) % 5)[None]
    mix = blend.choose(same, y, fold_of, "auto", lambda p, rows: roc_auc_score(y[rows], p[:, 1]), values=False)
    assert mix["method"] == "mean" and mix["gain_of_selection"]["mean"] == 0.0

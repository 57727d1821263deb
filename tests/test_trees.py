"""kit.trees: compiled scikit-learn classifiers match predict_proba eagerly, from a reloaded state_dict, traced and
through ONNX Runtime, including on rows that sit exactly on a split threshold."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from kit.errors import KitError
from kit.learners.catboost import catboost_json, compile_catboost
from kit.learners.gbdt import compile_hgb
from kit.learners.linear import compile_linear
from kit.learners.xgboost import compile_xgboost, xgboost_json
from kit.trees import ObliviousTrees, float32_at_most, from_state_dict

EAGER_TOL = 1e-6
EXPORT_TOL = 1e-5
HGB_CASES = {
    "few_leaves": dict(max_depth=None, max_leaf_nodes=4),
    "deep": dict(max_depth=None, max_leaf_nodes=None, min_samples_leaf=2),
}


def grid_data(n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train X, y and held-out float32 rows. Features lie on a grid of quarters, so HGB's thresholds (midpoints
    of neighbouring values) are eighths: exactly representable in float32, so a test row can sit on one."""
    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_redundant=0, n_classes=n_classes,
                               n_clusters_per_class=1, random_state=n_classes)
    X = np.round(X * 4) / 4
    return X[:300], y[:300], X[300:].astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """HGB fits on one OpenMP thread: on a busy 2-core machine its spinning worker threads turn a 0.1 s fit into
    several seconds."""
    with threadpool_limits(1, user_api="openmp"):
        yield


# name: (number of classes, HGB config or None for a logistic regression)
CASES = {**{f"hgb_{k}class_{name}": (k, config) for k in (2, 3) for name, config in HGB_CASES.items()},
         **{f"linear_{k}class": (k, None) for k in (2, 3)}}


@pytest.fixture(scope="module", params=list(CASES))
def case(request) -> tuple:
    """(sklearn model, compiled module, held-out float32 rows) per case; fitted once for the module's tests."""
    n_classes, config = CASES[request.param]
    X, y, held_out = grid_data(n_classes)
    if config is not None:
        model = HistGradientBoostingClassifier(max_iter=10, early_stopping=False, random_state=0, **config).fit(X, y)
        return model, compile_hgb(model), held_out
    model = LogisticRegression(max_iter=500).fit(X, y)
    return model, compile_linear(model), held_out


def at_thresholds(model: HistGradientBoostingClassifier, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per split of every tree: a held-out row with the split's feature set to the float32 nearest its
    threshold, and each row's float64 offset from its threshold. Every tree's root split is reached by every row,
    so at least those decide `<=` versus `<`, or float64 versus float32 comparison."""
    out, offsets = [], []
    for predictor in (p for iteration in model._predictors for p in iteration):
        for node in predictor.nodes[predictor.nodes["is_leaf"] == 0]:
            row = rows[len(out) % len(rows)].copy()
            row[node["feature_idx"]] = node["num_threshold"]
            out.append(row)
            offsets.append(float(row[node["feature_idx"]]) - node["num_threshold"])
    return np.stack(out), np.array(offsets)


def compiled(module: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(rows)).numpy()


def test_matches_predict_proba_on_held_out_rows(case):
    model, module, rows = case
    out = compiled(module, rows)
    assert out.dtype == np.float32 and out.shape == (len(rows), len(model.classes_))
    assert np.abs(out - model.predict_proba(rows)).max() <= EAGER_TOL
    assert np.abs(out.sum(1) - 1).max() <= EAGER_TOL


@pytest.mark.parametrize("case", [name for name, (_, config) in CASES.items() if config], indirect=True)
def test_rows_exactly_at_split_thresholds_go_left(case):
    model, module, rows = case
    edge, offsets = at_thresholds(model, rows)
    assert not offsets.any(), "the grid's thresholds should be exact in float32"
    assert np.abs(compiled(module, edge) - model.predict_proba(edge)).max() <= EAGER_TOL


def test_float32_rounding_never_flips_a_split():
    """Off the grid, thresholds are float64 midpoints: the float32 nearest one lies a hair above or below it, and
    only a test against the threshold rounded down to float32 (float32_at_most) sends it the way scikit-learn's
    float64 test does; rounding to nearest would flip the rows just below a threshold."""
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_redundant=0, random_state=1)
    model = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=8, early_stopping=False, random_state=0)
    model.fit(X, y)
    edge, offsets = at_thresholds(model, X[::10].astype(np.float32))
    assert (offsets > 0).any() and (offsets < 0).any()
    assert np.abs(compiled(compile_hgb(model), edge) - model.predict_proba(edge)).max() <= EAGER_TOL


def test_rebuilt_from_saved_state_dict_is_identical(case):
    _, module, rows = case
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for rebuilt in (from_state_dict(state), type(module).from_state_dict(state)):
        assert type(rebuilt) is type(module)
        assert np.array_equal(compiled(rebuilt, rows), compiled(module, rows))


def test_torchscript_and_onnx_match_at_batch_1_and_7(case, tmp_path):
    model, module, rows = case
    example = torch.from_numpy(rows[:3])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript / exporter deprecation notices
        torch.jit.save(torch.jit.trace(module, example), str(tmp_path / "model.ts"))
        torch.onnx.export(module, (example,), str(tmp_path / "model.onnx"), input_names=["features"],
                          output_names=["probs"], dynamic_axes={"features": {0: "batch"}, "probs": {0: "batch"}},
                          opset_version=17, dynamo=False)
        traced = torch.jit.load(str(tmp_path / "model.ts"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (rows[:1], rows[1:8]):
        expected = model.predict_proba(batch)
        assert np.abs(compiled(traced, batch) - expected).max() <= EXPORT_TOL
        (onnx_out,) = session.run(["probs"], {"features": batch})
        assert onnx_out.shape == expected.shape and np.abs(onnx_out - expected).max() <= EXPORT_TOL


def test_categorical_splits_are_refused():
    X, y, _ = grid_data(2)
    X[:, 0] = y + 2 * (np.arange(len(y)) % 2)  # categories {0, 2} are class 0, {1, 3} class 1: no threshold splits them
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0], random_state=0).fit(X, y)
    assert any(p.nodes["is_categorical"].any() for iteration in model._predictors for p in iteration)
    with pytest.raises(KitError, match=r"categorical features \(columns \[0\]\).*categorical_features=None"):
        compile_hgb(model)


def test_wrong_or_unfitted_models_and_foreign_state_dicts_are_refused():
    with pytest.raises(KitError, match="not fitted"):
        compile_hgb(HistGradientBoostingClassifier())
    with pytest.raises(KitError, match="HistGradientBoosting model, got LogisticRegression"):
        compile_hgb(LogisticRegression())
    with pytest.raises(KitError, match="fitted LogisticRegression"):
        compile_linear(LogisticRegression())
    with pytest.raises(KitError, match="not a compiled"):
        from_state_dict({"fc.weight": torch.zeros(2, 2)})


# CatBoost: (loss, classes) -> a fitted model on the grid's rows; 0 classes: a regressor.
CATBOOST_CASES = {"binary": 2, "multiclass": 3, "regression": 0}


@pytest.fixture(scope="module", params=list(CATBOOST_CASES))
def catboost_case(request) -> tuple:
    """(CatBoost model, compiled module, held-out float32 rows, its expected output): trees of depth 4 on the
    quarter grid, whose borders (midpoints) are exact in float32, so held-out rows sit on them."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    n_classes = CATBOOST_CASES[request.param]
    X, y, held_out = grid_data(max(n_classes, 2))
    common = dict(iterations=30, depth=4, verbose=0, thread_count=1, random_seed=0, allow_writing_files=False)
    if n_classes:
        model = CatBoostClassifier(loss_function="MultiClass" if n_classes > 2 else "Logloss", **common).fit(X, y)
        return model, compile_catboost(model), held_out, model.predict_proba
    model = CatBoostRegressor(**common).fit(X, X[:, 0] * 3 + y)
    return model, compile_catboost(model), held_out, lambda rows: model.predict(rows)[:, None]


def on_borders(model, rows: np.ndarray) -> np.ndarray:
    """One row per split of every tree, its feature set exactly on the split's border (CatBoost: `x > border`
    goes right, so these go left)."""
    out = []
    for tree in catboost_json(model)["oblivious_trees"]:
        for split in tree["splits"]:
            row = rows[len(out) % len(rows)].copy()
            row[split["float_feature_index"]] = split["border"]
            out.append(row)
    return np.stack(out)


def test_catboost_matches_its_predictions_on_held_out_rows_and_on_every_border(catboost_case):
    model, module, rows, expected = catboost_case
    edge = on_borders(model, rows)
    assert len(edge) == 30 * 4
    for batch in (rows, edge):
        out = compiled(module, batch)
        assert out.dtype == np.float32 and out.shape == expected(batch).shape
        assert np.abs(out - expected(batch)).max() <= EAGER_TOL * max(1, np.abs(out).max())


def assert_rebuilds_and_exports(module, rows: np.ndarray, expected, tmp_path) -> None:
    """The module's state_dict alone rebuilds it, and its TorchScript and ONNX exports match at batch 1 and 7."""
    rebuilt = from_state_dict(module.state_dict())
    assert np.array_equal(compiled(rebuilt, rows), compiled(module, rows))
    example = torch.from_numpy(rows[:3])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp_path / "model.onnx"), input_names=["features"],
                          output_names=["out"], dynamic_axes={"features": {0: "batch"}, "out": {0: "batch"}},
                          opset_version=17, dynamo=False)
        traced = torch.jit.trace(module, example)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (rows[:1], rows[1:8]):
        scale = max(1, np.abs(expected(batch)).max())
        assert np.abs(compiled(traced, batch) - expected(batch)).max() <= EXPORT_TOL * scale
        assert np.abs(session.run(["out"], {"features": batch})[0] - expected(batch)).max() <= EXPORT_TOL * scale


def test_catboost_rebuilds_from_its_state_dict_and_exports_at_batch_1_and_7(catboost_case, tmp_path):
    _, module, rows, expected = catboost_case
    assert_rebuilds_and_exports(module, rows, expected, tmp_path)


def test_float32_at_most_keeps_every_float32_on_its_side():
    rng = np.random.default_rng(0)
    threshold = torch.from_numpy(np.concatenate([rng.normal(size=500), [0.1, 1 / 3, 1e-30, -2.5, np.inf]]))
    near = threshold.to(torch.float32)
    rows = torch.stack([torch.nextafter(near, torch.tensor(-np.inf)), near,
                        torch.nextafter(near, torch.tensor(np.inf))])
    below = float32_at_most(threshold)
    assert below.dtype == torch.float32 and (below.double() <= threshold).all()
    assert torch.equal(rows <= below, rows.double() <= threshold)
    assert not torch.equal(rows <= near, rows.double() <= threshold)  # rounding to nearest would flip some


def test_oblivious_trees_of_mixed_depth_match_their_definition(tmp_path):
    """Trees of depth 2 and 0 padded to depth 3, borders off float32 (0.1), vector leaves: each row's leaf is
    sum_i (x[f_i] > border_i) << i in float64, through eager, a rebuilt state_dict, TorchScript and ONNX."""
    feature = torch.tensor([[0, 2, 0], [1, 0, 0], [0, 0, 0]])
    border = torch.tensor([[0.1, -1 / 3, 0.7], [0.1, np.inf, np.inf], [np.inf, np.inf, np.inf]], dtype=torch.float64)
    value = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 8, 3)))
    module = ObliviousTrees(feature, border, value, torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64))
    near = np.float32(0.1)
    x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    x[:6, 0] = x[6:12, 1] = [np.nextafter(near, np.float32(-1)), near, np.nextafter(near, np.float32(1))] * 2

    def reference(rows: np.ndarray) -> np.ndarray:
        right = rows.astype(np.float64)[:, feature.numpy()] > border.numpy()  # [N, trees, levels]
        raw = np.array([0.5, 0.0, -0.5]) + value.numpy()[np.arange(3), (right * (1 << np.arange(3))).sum(2)].sum(1)
        return torch.softmax(torch.from_numpy(raw), 1).numpy()

    assert np.abs(compiled(module, x) - reference(x)).max() <= EAGER_TOL
    assert_rebuilds_and_exports(module, x, reference, tmp_path)


def test_catboost_with_categorical_splits_is_refused():
    from catboost import CatBoostClassifier

    X, y, _ = grid_data(2)
    frame = pd.DataFrame(X).assign(c=np.where(y == 1, "a", "b"))
    model = CatBoostClassifier(iterations=3, verbose=0, thread_count=1, cat_features=["c"],
                               allow_writing_files=False).fit(frame, y)
    with pytest.raises(KitError, match="categorical or combined splits.*without cat_features"):
        compile_catboost(model)
    with pytest.raises(KitError, match="fitted CatBoost"):
        compile_catboost(CatBoostClassifier())


# XGBoost: (kind, early stopping) -> a fitted model on the grid's rows; 0 classes: a regressor.
XGBOOST_CASES = {f"{kind}_{'stopped' if stop else 'all_rounds'}": (k, stop)
                 for kind, k in CATBOOST_CASES.items() for stop in (False, True)}


@pytest.fixture(scope="module", params=list(XGBOOST_CASES))
def xgboost_case(request) -> tuple:
    """(XGBoost model, compiled module, held-out float32 rows, its expected output): depth-4 histogram trees on the
    quarter grid, whose split conditions (bin cuts) are grid values, so held-out rows sit on them. Stopped: early
    stopping on 50 of the 300 rows, so the booster holds more rounds than its predict (and the compiled walk) uses."""
    from xgboost import XGBClassifier, XGBRegressor

    n_classes, stop = XGBOOST_CASES[request.param]
    X, y, held_out = grid_data(max(n_classes, 2))
    common = dict(n_estimators=40 if stop else 20, max_depth=4, learning_rate=0.3, tree_method="hist", n_jobs=1,
                  random_state=0, early_stopping_rounds=3 if stop else None)
    target = y if n_classes else X[:, 0] * 3 + y
    model = (XGBClassifier if n_classes else XGBRegressor)(**common)
    model.fit(X[:250], target[:250], eval_set=[(X[250:], target[250:])], verbose=False)
    if stop:
        assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    expected = model.predict_proba if n_classes else (lambda rows: model.predict(rows)[:, None])
    return model, compile_xgboost(model), held_out, expected


def on_split_conditions(model, rows: np.ndarray) -> np.ndarray:
    """Two rows per split of every kept tree: the feature exactly on the split's condition (XGBoost: `x < condition`
    goes left, so this goes right) and on the float32 just below it (left)."""
    out = []
    for tree in xgboost_json(model)["learner"]["gradient_booster"]["model"]["trees"]:
        for node in np.flatnonzero(np.asarray(tree["left_children"]) != -1):
            condition = np.float32(tree["split_conditions"][node])
            for value in (condition, np.nextafter(condition, np.float32(-np.inf))):
                row = rows[len(out) % len(rows)].copy()
                row[tree["split_indices"][node]] = value
                out.append(row)
    return np.stack(out)


def test_xgboost_matches_its_predictions_on_held_out_rows_and_on_every_split(xgboost_case):
    model, module, rows, expected = xgboost_case
    kept = getattr(model, "best_iteration", model.get_booster().num_boosted_rounds() - 1) + 1
    per_round = model.n_classes_ if getattr(model, "n_classes_", 0) > 2 else 1  # one tree per class score
    assert len(module.roots) == kept * per_round  # only the rounds predict uses
    edge = on_split_conditions(model, rows)
    for batch in (rows, edge):
        out = compiled(module, batch)
        assert out.dtype == np.float32 and out.shape == expected(batch).shape
        assert np.abs(out - expected(batch)).max() <= 1e-5 * max(1, np.abs(out).max())


def test_xgboost_rebuilds_from_its_state_dict_and_exports_at_batch_1_and_7(xgboost_case, tmp_path):
    _, module, rows, expected = xgboost_case
    assert_rebuilds_and_exports(module, rows, expected, tmp_path)


def test_xgboost_with_other_objectives_categorical_splits_or_unfitted_is_refused():
    from xgboost import XGBClassifier, XGBRegressor

    X, y, _ = grid_data(2)
    with pytest.raises(KitError, match="fitted XGBoost"):
        compile_xgboost(XGBClassifier())
    with pytest.raises(KitError, match="objectives.*got 'count:poisson'"):
        compile_xgboost(XGBRegressor(n_estimators=2, objective="count:poisson", n_jobs=1).fit(X, y))
    frame = pd.DataFrame(X).assign(c=pd.Categorical(np.where(y == 1, "a", "b")))
    model = XGBClassifier(n_estimators=2, enable_categorical=True, tree_method="hist", n_jobs=1).fit(frame, y)
    with pytest.raises(KitError, match="categorical splits.*without enable_categorical"):
        compile_xgboost(model)


@pytest.mark.parametrize("kind", list(CATBOOST_CASES))
@pytest.mark.parametrize("stop", [False, True], ids=["small_table", "stopped"])
def test_xgboost_learner_fits_through_the_registry(kind, stop):
    """get_learner("xgboost") on each target kind: the small-table recipe and, forced on, early stopping on a
    held-out 10%; what fit_arrays returns matches the estimator fit_estimator fits for the same seed."""
    from kit.config import load_config
    from kit.learners import get_learner
    from kit.target import Binary, Multiclass, Regression

    config = load_config("titanic")
    config.xgboost.early_stopping, config.xgboost.max_iter, config.xgboost.learning_rate = stop, 300, 0.3
    target = {"binary": Binary(["0", "1"]), "multiclass": Multiclass(["a", "b", "c"]), "regression": Regression()}[kind]
    X, y, held_out = grid_data(max(CATBOOST_CASES[kind], 2))
    x, y = X.astype(np.float32), (y if kind != "regression" else X[:, 0] * 3 + y)
    learner = get_learner("xgboost")
    assert learner.reads == "ordinal" and learner.settings is type(config.xgboost)
    model = learner.fit_estimator(config, target, x, y, seed=7)
    rounds = model.get_booster().num_boosted_rounds()
    if stop:  # stopped 50 rounds after its best, which predict (and the compiled walk) stop at
        assert model.best_iteration + 51 == rounds < 300
    else:  # the small-table recipe: 100 rounds
        assert rounds == 100 and not hasattr(model, "best_iteration")
    expected = model.predict_proba(held_out) if target.width > 1 else model.predict(held_out)[:, None]
    module = learner.fit_arrays(config, target, x, y, seed=7)
    out = compiled(module, held_out)
    assert out.shape == (len(held_out), target.width)
    assert np.abs(out - expected).max() <= 1e-5 * max(1, np.abs(expected).max())

"""Each target kind (kit/target/) on fixed inputs: the one inference rule, fold strata, the network's link, the
scale and its inverse, what a metric and a submission get; and the kind and learner registries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kit.errors import KitError
from kit.learners import LEARNERS, get_learner
from kit.metrics import get_metric
from kit.target import TARGETS, Binary, Multiclass, Regression, infer, sorted_labels, target_class

PROBS = np.array([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])


def test_one_rule_infers_the_kind_and_says_why():
    assert infer(pd.Series(["yes", "no", "no"])) == (Binary, "exactly 2 distinct values")
    assert infer(pd.Series(["a", "b", "c"]))[0] is Multiclass
    assert infer(pd.Series([str(i % 5) for i in range(50)]))[0] is Multiclass  # few whole numbers: classes
    assert infer(pd.Series([str(i % 25) for i in range(50)]))[0] is Regression  # more than 20: values
    assert infer(pd.Series([f"{i * 1.5}" for i in range(50)])) == (Regression, "numbers with 50 distinct values")
    # the metric narrows the kinds: a 0/1 column scored by RMSE is a regression
    kind, rule = infer(pd.Series(["0", "1", "1"]), get_metric("rmse"))
    assert kind is Regression and "METRIC=rmse scores regression" in rule
    with pytest.raises(KitError, match="metric accuracy scores binary or multiclass targets, but 'y' is regression"):
        infer(pd.Series([f"{i * 1.5}" for i in range(50)]), get_metric("accuracy"), "y")
    with pytest.raises(KitError, match="single value"):
        infer(pd.Series(["a", "a"]))


def test_make_new_and_training_settle_a_column_by_the_same_rule(tmp_path):
    from kit.config import load_config
    from kit.scaffold import new_competition
    from kit.tasks import get_task

    rng = np.random.default_rng(0)
    y = rng.integers(0, 21, 200)  # 21 whole numbers: one more than classes may have
    pd.DataFrame({"id": range(200), "x": rng.random(200), "y": y}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"id": range(200, 220), "x": rng.random(20)}).to_csv(tmp_path / "test.csv", index=False)
    new = new_competition("c", tmp_path, tmp_path / "comps")
    config = load_config(str(tmp_path / "comps" / "c"), ["target.type=auto"])
    assert new.kind is Regression and get_task(config).resolve().target.type == "regression"


def test_labels_order_numbers_as_numbers():
    assert sorted_labels(pd.Series(["10", "9", "100", "9"])) == ["9", "10", "100"]
    assert sorted_labels(pd.Series(["yes", "no"])) == ["no", "yes"]


def test_classes_stratify_on_the_label_values_on_quantile_bins():
    y = np.array([2, 0, 1, 1])
    assert Multiclass(["a", "b", "c"]).strata(y) is y
    values = np.arange(100.0)
    bins = Regression().strata(values)
    assert bins.min() == 0 and bins.max() == 9 and np.all(np.bincount(bins) == 10)


def test_the_link_turns_network_outputs_into_what_the_blend_takes():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    probs = Binary(["n", "y"]).link(torch.nn.Identity(), {})(logits)
    assert torch.allclose(probs, torch.softmax(logits, 1))
    state = {"target": Regression(transform="log1p").fit_scale(np.array([0.0, 3.0, 8.0]))}
    values = Regression(transform="log1p").link(torch.nn.Identity(), state)(torch.tensor([[0.0], [1.0]]))
    t = state["target"]
    assert torch.allclose(values[:, 0], torch.tensor([t["mean"], t["mean"] + t["std"]]))
    assert np.allclose(Regression(transform="log1p").from_outputs(np.array([[0.0]]), state), np.expm1(t["mean"]))


def test_the_scale_is_fitted_on_transformed_values_and_inverted():
    y = np.array([1.0, 10.0, 100.0])
    kind = Regression(transform="log1p")
    scale = kind.fit_scale(y)
    assert scale["mean"] == pytest.approx(np.log1p(y).mean()) and scale["std"] == pytest.approx(np.log1p(y).std())
    assert np.allclose(kind.inverse(kind.forward(y)), y)
    assert Regression().fit_scale(np.array([5.0, 5.0]))["std"] == 1.0  # a constant target keeps a finite scale
    assert Binary(["n", "y"]).fit_scale(np.array([0, 1])) is None


def test_what_metrics_and_submissions_get():
    binary = Binary(["no", "yes"])
    assert np.array_equal(binary.consumed("proba", PROBS, None), PROBS[:, 1])
    assert np.array_equal(binary.consumed("label", PROBS, 0.5), [0, 1, 0])
    assert np.array_equal(binary.consumed("label", PROBS, 0.4), [0, 1, 1])  # a tuned threshold decides
    assert list(binary.answer(PROBS, get_metric("accuracy", binary), None, ["no", "yes"])) == ["no", "yes", "no"]
    assert np.array_equal(binary.answer(PROBS, get_metric("roc_auc", binary), None, ["no", "yes"]), PROBS[:, 1])
    multi = Multiclass(["a", "b", "c"])
    probs3 = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert multi.consumed("proba", probs3, None) is probs3 and list(multi.consumed("label", probs3, None)) == [1, 0]
    assert multi.per_class_columns(get_metric("log_loss")) and not binary.per_class_columns(get_metric("log_loss"))
    assert list(multi.answer(probs3, get_metric("accuracy"), None, ["0", "1", "2"])) == ["1", "0"]
    values = np.array([[1.5], [2.5]])
    assert np.array_equal(Regression().answer(values, get_metric("rmse"), None, []), [1.5, 2.5])
    assert Regression().output_contract("price", "x")["values"] and not binary.output_contract("y", "x")["values"]


def test_labels_a_kind_cannot_take_are_found():
    bad, expected = Binary(["no", "yes"]).invalid(pd.Series(["no", "maybe", "yes"]))
    assert list(bad) == [False, True, False] and expected == "one of ['no', 'yes']"
    bad, expected = Regression().invalid(pd.Series(["1.5", "inf", "x"]))
    assert list(bad) == [False, True, True] and expected == "a finite number"
    with pytest.raises(KitError, match="binary but holds 3 values"):
        Binary(["a", "b", "c"]).check_classes()
    with pytest.raises(KitError, match="remove classes"):
        Regression(["a", "b"]).check_classes()


def test_the_registries_refuse_an_unknown_name_and_list_the_known_ones():
    assert list(TARGETS) == ["multilabel", "binary", "ordinal", "multiclass", "regression"]  # the inference order
    with pytest.raises(KitError, match="unknown target type 'survival'; known types: multilabel, binary, ordinal, "
                                       "multiclass, regression"):
        target_class("survival")
    assert {"net", "gbdt", "catboost", "linear"} <= set(LEARNERS)
    with pytest.raises(KitError, match="unknown learner 'svm'; known learners: .*gbdt.*net"):
        get_learner("svm")
    from kit.config import load_config

    with pytest.raises(KitError, match="unknown learner 'svm'"):
        load_config("titanic", ["learners=[gbdt, svm]"])

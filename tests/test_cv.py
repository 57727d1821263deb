import numpy as np
import pytest

from kit.config import load_config
from kit.cv import stratified_folds
from kit.errors import KitError
from kit.tasks import get_task
from kit.tasks.tabular import encode, feature_names, fit_encoding


def test_folds_are_stratified_disjoint_and_cover_every_row():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    folds = stratified_folds(y, 5, seed=0)
    valid = np.concatenate([v for _, v in folds])
    assert sorted(valid.tolist()) == list(range(len(y)))  # every row validated exactly once
    for train_idx, valid_idx in folds:
        assert not set(train_idx) & set(valid_idx)
        assert np.bincount(y[valid_idx]).tolist() == [12, 6, 2]  # class ratios kept in each fold


def test_folds_depend_on_the_seed_only():
    y = np.array([0, 1] * 20)
    a, b, c = (stratified_folds(y, 4, s) for s in (1, 1, 2))
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=False))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c, strict=False))


def test_too_many_folds_for_a_class_is_refused():
    with pytest.raises(KitError, match="smallest class has 2"):
        stratified_folds(np.array([0] * 10 + [1] * 2), 3, seed=0)


def test_fitted_preprocessing_never_sees_the_validation_fold():
    config = load_config("titanic")
    task = get_task(config)
    train = task.load("train")
    train_idx, valid_idx = stratified_folds(train.y, 5, seed=0)[0]
    part = train.subset(train_idx)
    state = task.fit(part)

    # Poison the validation rows: a new title, absurd ages, a ticket shared by all of them.
    poisoned = train.data.copy()
    poisoned.loc[valid_idx, "Title"] = "Emperor"
    poisoned.loc[valid_idx, "Age"] = 1000.0
    poisoned.loc[valid_idx, "Ticket"] = "SHARED"
    poisoned_part = poisoned.iloc[train_idx].reset_index(drop=True)
    assert fit_encoding(poisoned_part, config.features) == state  # only training rows count

    assert "Emperor" not in state["categorical"]["Title"]
    ages = part.data["Age"]
    assert state["numeric"]["Age"]["median"] == pytest.approx(ages.median())
    mrs = part.data.loc[part.data["Title"] == "Mrs", "Age"]
    assert state["numeric"]["Age"]["group_medians"]["Mrs"] == pytest.approx(mrs.median())


def test_encoding_imputes_by_group_and_ignores_unseen_categories():
    config = load_config("titanic")
    task = get_task(config)
    train = task.load("train")
    state = task.fit(train)
    row = train.data.iloc[[0]].copy()
    row["Age"] = np.nan
    row["Title"] = "Master"
    row["Embarked"] = "Z"  # never seen in training
    x = encode(row, state)
    names = feature_names(state)
    entry = state["numeric"]["Age"]
    expected_age = (entry["group_medians"]["Master"] - entry["mean"]) / entry["std"]
    assert x[0, names.index("Age")] == pytest.approx(expected_age, rel=1e-5)
    assert all(x[0, names.index(n)] == 0 for n in names if n.startswith("Embarked="))
    assert x.shape == (1, len(names)) and np.isfinite(x).all()

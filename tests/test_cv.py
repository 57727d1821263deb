import re

import numpy as np
import pytest

from kit.config import load_config
from kit.cv import cross_validate
from kit.encoding import encode, feature_names
from kit.errors import KitError
from kit.folds import stratified_folds
from kit.tasks import get_task


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


FOLDS = 2
AGE = "977.25"  # an impossible age; the 40 rows that carry it outnumber the real "Rare" titles of any fold


def _markers(fold: int) -> list[str]:
    """Text that only the marked rows of `fold` carry and a fitted preprocessing keeps verbatim: a ticket (counted
    per ticket), a port (one-hot vocabulary) and a surname (family fates)."""
    return [f'"MARKTICKET{fold}"', f'"Markport{fold}"', f"Markfamily{fold}-"]


def test_fitted_preprocessing_never_sees_the_validation_fold(tmp_path, titanic_train):
    """Through the CV driver: markers in the validation rows of each fold reach every other fold's fitted
    preprocessing (those rows train there), never their own fold's. The fold JSON is searched as text, whatever
    its layout."""
    frame = titanic_train.copy()
    y = (frame["Survived"] == "1").to_numpy().astype(int)
    config = load_config("titanic", [f"cv.folds={FOLDS}", "cv.repeats=1", "train.epochs=1", "learners=[net]"])
    for fold, (_, valid_idx) in enumerate(stratified_folds(y, FOLDS, config.cv.seed)):
        rows = frame.index[valid_idx[:40]]
        frame.loc[rows, "Ticket"] = f"MARKTICKET{fold}"
        frame.loc[rows, "Embarked"] = f"Markport{fold}"
        frame.loc[rows, "Name"] = f"Markfamily{fold}," + frame.loc[rows, "Name"].str.split(",", n=1).str[1]
        if fold == 0:  # title "Emperor" (kit's "Rare" group), whose median age they set wherever they train
            frame.loc[rows, ["Name", "Age"]] = ["Markfamily0, Emperor. Zed", AGE]
    data = tmp_path / "train.csv"
    frame.to_csv(data, index=False)

    run = cross_validate(config, data, tmp_path / "runs")
    age = re.compile(r"(?<![\d.])" + re.escape(AGE) + r"(?!\d)")
    for fold in range(FOLDS):
        text = (run / f"fold{fold}.json").read_text()
        for other in range(FOLDS):
            for marker in _markers(other):
                assert (marker in text) == (other != fold), (fold, marker)
        assert bool(age.search(text)) == (fold != 0), fold


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

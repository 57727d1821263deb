import pytest

from kit.config import known_competitions, load_config
from kit.errors import KitError


def test_loads_titanic_with_typed_sections():
    config = load_config("titanic")
    assert config.task == "tabular"
    assert config.cv.folds == 5 and isinstance(config.train.lr, float)
    assert config.features.impute_by == {"Age": "Title"}


def test_overrides_are_typed_and_applied():
    config = load_config("titanic", ["cv.folds=10", "train.epochs=50", "train.lr=1e-3", "model.hidden=[8, 4]"])
    assert (config.cv.folds, config.train.epochs, config.train.lr, config.model.hidden) == (10, 50, 1e-3, [8, 4])


def test_unknown_competition_lists_the_known_ones():
    with pytest.raises(KitError) as err:
        load_config("no-such-comp")
    assert "no-such-comp" in str(err.value) and "titanic" in str(err.value)
    assert "titanic" in known_competitions()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cv.fold=3", "unknown config key 'cv.fold'"),
        ("nope=1", "unknown config key 'nope'"),
        ("cv.folds=many", "expected an integer"),
        ("train.lr=fast", "expected a number"),
        ("train.monitor=f1", "one of 'accuracy', 'loss'"),
        ("cv=3", "must be a mapping"),
        ("cv.folds", "key=value"),
    ],
)
def test_bad_overrides_name_the_key_value_and_expectation(override, expected):
    with pytest.raises(KitError) as err:
        load_config("titanic", [override])
    assert expected in str(err.value)

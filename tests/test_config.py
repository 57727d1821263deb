import dataclasses
import types
import typing

import pytest

from kit.config import Config, known_competitions, load_config
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
        ("train.monitor=f1", "one of 'metric', 'loss'"),
        ("cv=3", "must be a mapping"),
        ("cv.folds", "key=value"),
    ],
)
def test_bad_overrides_name_the_key_value_and_expectation(override, expected):
    with pytest.raises(KitError) as err:
        load_config("titanic", [override])
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.warmup_epochs=1e999", "config key 'train.warmup_epochs' is inf; it must be a finite number"),
        ("train.lr=1e999", "config key 'train.lr' is inf; it must be a positive finite number"),
        ("train.lr=0", "config key 'train.lr' is 0.0; it must be a positive"),
        ("tta.blend=5", "config key 'tta.blend' is 5.0; it must be from 0 to 1"),
        ("tta.blend=-0.1", "config key 'tta.blend' is -0.1; it must be from 0 to 1"),
        ("train.min_delta=nan", "config key 'train.min_delta' is nan; it must be a finite number, 0 or more"),
        ("train.min_delta=-1", "config key 'train.min_delta' is -1.0; it must be a finite number, 0 or more"),
        ("image.batch_size=0", "config key 'image.batch_size' is 0; it must be at least 1"),
        ("image.size=100000", "config key 'image.size' is 100000; it must be from 16 to 4096"),
        ("image.mean=[0.5,0.5]", "config key 'image.mean' is [0.5, 0.5]; it must be three numbers from 0 to 1"),
        ("image.std=[0.5,0.5,0]", "config key 'image.std' is [0.5, 0.5, 0.0]; it must be three numbers above 0"),
        ("image.std=[0.5,0.5,.inf]", "config key 'image.std' is [0.5, 0.5, inf]"),
        ("augment.scale=[0.8,0.2]", "config key 'augment.scale' is [0.8, 0.2]; it must be two numbers [min, max]"),
        ("augment.scale=[0,1]", "config key 'augment.scale' is [0.0, 1.0]; it must be two numbers"),
        ("augment.ratio=[1]", "config key 'augment.ratio' is [1.0]; it must be two numbers"),
        ("augment.hflip=1.5", "config key 'augment.hflip' is 1.5; it must be from 0 to 1"),
        ("augment.rotate=720", "config key 'augment.rotate' is 720.0; it must be from 0 to 180"),
        ("augment.color_jitter=2", "config key 'augment.color_jitter' is 2.0; it must be from 0 (off) to 1"),
        ("augment.hue=0.7", "config key 'augment.hue' is 0.7; it must be from 0 (off) to 0.5"),
        ("model.hidden=[16,0]", "config key 'model.hidden' is [16, 0]; it must be a list of layer widths"),
        ("model.drop_path=1", "config key 'model.drop_path' is 1.0; it must be in [0, 1)"),
        ("train.mixup=.nan", "config key 'train.mixup' is nan"),
        ("train.seed=-1", "config key 'train.seed' is -1; it must be from 0 to 2147483647"),
        ("cv.seed=4294967296", "config key 'cv.seed' is 4294967296; it must be from 0 to 2147483647"),
        ("train.num_workers=100000", "config key 'train.num_workers' is 100000; it must be from 0 to 256"),
    ],
)
def test_out_of_range_values_name_the_key_value_and_range(override, expected):
    with pytest.raises(KitError) as err:
        load_config("titanic", [override])
    assert expected in str(err.value)


def _numeric_keys(cls=Config, prefix=""):
    """(dotted key, 'int' or 'float', is a list) for every key of the config that holds numbers."""
    for name, tp in typing.get_type_hints(cls).items():
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            yield from _numeric_keys(tp, key + ".")
            continue
        for arg in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,):
            inner = typing.get_args(arg)[0] if typing.get_origin(arg) is list else arg
            if inner in (int, float):
                yield key, inner.__name__, typing.get_origin(arg) is list


@pytest.mark.parametrize(("key", "kind", "is_list"), list(_numeric_keys()))
def test_every_numeric_key_has_a_range(key, kind, is_list):
    """Infinity, NaN and a huge negative number are refused for every numeric key, naming it: new keys too."""
    bad = [".inf", "-.inf", ".nan", "-1e300"] if kind == "float" else ["-1000000000000"]
    for value in bad:
        with pytest.raises(KitError) as err:
            load_config("titanic", [f"{key}={f'[{value}]' if is_list else value}"])
        assert f"config key {key!r} is " in str(err.value), (value, str(err.value))


def test_shipped_configs_and_recipes_are_in_range():
    for name in known_competitions():
        load_config(name)
    for name in ("food11", "food101-10"):
        load_config(name, recipe="gpu")

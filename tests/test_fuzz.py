"""Fuzzing the two text inputs users edit by hand, config overrides and CSVs: whatever comes in, the answer is
a working result or a KitError (one readable message), never another exception. Derandomized: the examples are
the same on every run, so a failure in CI reproduces on any machine."""

import dataclasses
import json
import math
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import TITANIC
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kit.config import load_config, to_dict
from kit.cv import cross_validate
from kit.encoding import encode
from kit.errors import KitError
from kit.tasks import get_task

FUZZ = settings(max_examples=50, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = [f"{section}.{key}" for section, values in to_dict(load_config("titanic")).items()
        if isinstance(values, dict) for key in values]
VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "[", "]", "{a: 1}", "[1, 2]", "null", "true", "given", "auto", "- x", ": :", "'", "1e999"]),
    st.text(max_size=12),
)
OVERRIDES = st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(string.ascii_letters + "._", max_size=12)),
                               VALUES).map("=".join), max_size=3)


def _from(low, high=math.inf, low_open=False, high_open=False):
    return lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high)


def _pair(low, high):
    return lambda v: len(v) == 2 and low < v[0] <= v[1] <= high


def _rgb(low_open):
    return lambda v: v is None or (len(v) == 3 and all(_from(0, 1, low_open=low_open)(x) for x in v))


SEED, SIDE = _from(0, 2**31 - 1), _from(16, 4096)
# What a loaded config may hold, written out apart from kit/config.py; any other number must at least be finite.
RANGES = {
    "cv.folds": lambda v: v == "given" or v >= 2, "cv.seed": SEED,
    "image.size": SIDE, "image.test_size": lambda v: v == 0 or SIDE(v), "image.mean": _rgb(False),
    "image.std": _rgb(True), "image.decode_workers": lambda v: v == "auto" or 1 <= v <= 256,
    "image.batch_size": _from(1), "image.device_cache": _from(0, 1, low_open=True),
    "augment.scale": _pair(0, 1), "augment.ratio": _pair(0, 10), "augment.hflip": _from(0, 1),
    "augment.vflip": _from(0, 1), "augment.rotate": _from(0, 180), "augment.color_jitter": _from(0, 1),
    "augment.hue": _from(0, 0.5), "tta.blend": _from(0, 1), "tta.views": len, "predict.batch_size": _from(0),
    "model.hidden": lambda v: all(h >= 1 for h in v), "model.dropout": _from(0, 1, high_open=True),
    "model.drop_path": _from(0, 1, high_open=True),
    "train.epochs": _from(1), "train.batch_size": _from(1), "train.lr": _from(0, low_open=True),
    "train.weight_decay": _from(0), "train.warmup_epochs": _from(0), "train.grad_clip": _from(0),
    "train.label_smoothing": _from(0, 1, high_open=True), "train.mixup": _from(0), "train.cutmix": _from(0),
    "train.patience": _from(1), "train.min_epochs": _from(0), "train.min_delta": _from(0), "train.seed": SEED,
    "train.num_workers": lambda v: v == "auto" or 0 <= v <= 256,
}


def _numbers(value, key=""):
    """(key, number) for every number in a config dict, lists included."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def assert_in_range(config) -> None:
    values = to_dict(config)
    for key, number in _numbers(values):
        assert math.isfinite(number), (key, number)
    for key, ok in RANGES.items():
        section, name = key.split(".")
        assert ok(values[section][name]), (key, values[section][name])


@FUZZ
@example(["train.warmup_epochs=1e999"])  # these five loaded once (the first then crashed training)
@example(["train.lr=1e999"])
@example(["tta.blend=5"])
@example(["train.min_delta=nan"])
@example(["image.batch_size=0"])
@given(OVERRIDES)
def test_any_override_gives_a_config_or_a_clear_error(overrides):
    try:
        config = load_config("titanic", overrides)
    except KitError as exc:
        assert str(exc)
        return
    assert_in_range(config)


# The keys that reach the training loop, with values that are mostly plausible: a good share of them load.
TRAIN_KEYS = ["train.lr", "train.weight_decay", "train.warmup_epochs", "train.grad_clip", "train.label_smoothing",
              "train.mixup", "train.batch_size", "train.patience", "train.min_epochs", "train.min_delta",
              "train.monitor", "train.class_weights", "model.hidden", "model.dropout", "cv.seed", "train.seed"]
TRAIN_VALUES = st.one_of(st.integers(-2, 100).map(str), st.floats(-1, 1e6, allow_nan=False).map(str),
                         st.sampled_from(["1e-4", "0.5", "0.99", "1e300", "nan", "loss", "true", "[4]", "[8, 4]"]))


@settings(FUZZ, max_examples=4)
@example(["train.batch_size=1"])  # refused (skipped here); it once loaded and BatchNorm crashed on batches of one
@example(["train.warmup_epochs=1e999"])  # refused; it once loaded and crashed with an OverflowError
@example(["model.hidden=[0]"])  # refused
@example(["train.batch_size=2", "train.label_smoothing=0.99", "model.dropout=0.99", "train.mixup=100"])
@example(["train.warmup_epochs=1e300", "train.min_delta=1e300", "train.grad_clip=1e-9", "model.hidden=[1]"])
@given(st.lists(st.tuples(st.sampled_from(TRAIN_KEYS), TRAIN_VALUES).map("=".join), min_size=1, max_size=4))
def test_accepted_configs_train_one_tiny_epoch(tmp_path, overrides):
    """A config that loads trains: one epoch of 2 folds on 80 Titanic rows gives finite scores, or (a learning
    rate so high that the first epoch diverges) a KitError saying so. Explicit examples just past a range's end
    are refused today and so skipped; they train here the day that range is loosened."""
    try:
        config = load_config("titanic", [*overrides, "train.epochs=1", "cv.folds=2", "learners=[net]"])
    except KitError:
        assume(False)
    data = tmp_path / "train.csv"
    if not data.exists():
        pd.read_csv(TITANIC / "train.csv", dtype=str, keep_default_na=False).head(80).to_csv(data, index=False)
    runs = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        run = cross_validate(config, data, runs)
    except KitError as exc:
        assert "diverged" in str(exc), str(exc)
        return
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["cv"]["mean"] <= 1 and len(pd.read_csv(run / "oof.csv")) == 80
    assert dataclasses.asdict(config)["train"]["epochs"] == 1


CELLS = st.one_of(st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e309", "0x10", " ", "\"", ",", "\n", "male"]),
                  st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True).map(str))


@FUZZ
@example(edits=[(0, 2, "")], drop=None, sep=",")  # found by this test: a missing category broke sorting
@given(edits=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 11), CELLS), max_size=4),
       drop=st.one_of(st.none(), st.integers(0, 11)), sep=st.sampled_from([",", ",", ",", ";", "\t"]))
def test_any_edited_csv_trains_or_gives_a_clear_error(tmp_path, titanic_train, edits, drop, sep):
    frame = titanic_train.head(30).copy()
    for row, column, value in edits:
        frame.iloc[row, column] = value
    if drop is not None:
        frame = frame.drop(columns=frame.columns[drop])
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False, sep=sep)
    task = get_task(load_config("titanic"))
    try:
        samples = task.load("train", path)
        state = task.fit(samples)
        assert np.isfinite(encode(samples.data, state)).all()  # what reaches the model is finite
    except KitError as exc:
        assert str(exc)

"""Fuzzing the two text inputs users edit by hand, config overrides and CSVs: whatever comes in, the answer is
a working result or a KitError (one readable message), never another exception."""

import string

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kit.config import load_config, to_dict
from kit.errors import KitError
from kit.tasks import get_task
from kit.tasks.tabular import encode

FUZZ = settings(max_examples=50, deadline=None, database=None,
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


@FUZZ
@given(OVERRIDES)
def test_any_override_gives_a_config_or_a_clear_error(overrides):
    try:
        load_config("titanic", overrides)
    except KitError as exc:
        assert str(exc)


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

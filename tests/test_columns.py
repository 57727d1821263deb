"""Column kinds inferred from tables read as text (kit/columns.py), and the numbers made of dates and text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kit.columns import as_text, date_format, date_parts, infer_kind, infer_kinds, text_features, typed
from kit.encoding import encode, fit_encoding


def col(values) -> pd.Series:
    """A column as read_table gives it: strings, None/empty -> NaN."""
    return pd.Series([None if v in (None, "") else str(v) for v in values], dtype=object)


def test_numeric_with_blanks_and_integers_with_few_values():
    assert infer_kind(col(["1.5", "", "-2", "3e2", ""])) == {"kind": "numeric",
                                                             "reason": "all 3 values are numbers (2 empty)"}
    assert infer_kind(col(["0", "1"] * 30))["kind"] == "numeric"  # a 0/1 flag: trees and linear models take it
    assert infer_kind(col(["1", "2", "3"] * 30))["kind"] == "numeric"  # Pclass-like codes


def test_not_quite_numbers_are_not_numeric():
    assert infer_kind(col(["1", "2", "x"] * 10))["kind"] == "categorical"


def test_infinite_numbers_are_missing_and_said():
    kind = infer_kind(col(["1", "2", "inf"] * 10))
    assert kind == {"kind": "numeric", "reason": "all 20 values are numbers (10 infinite or too large for a float, "
                                                 "e.g. 'inf', read as missing)"}
    assert infer_kind(col(["inf", "-inf"] * 10))["kind"] == "categorical"  # no finite number at all


def test_missing_value_tokens_in_numbers_are_missing():
    # House Prices writes "NA" in numeric columns (LotFrontage): still numbers, the NA rows missing.
    kind = infer_kind(col(["65", "80", "NA", "", "?"] * 10))
    assert kind == {"kind": "numeric", "reason": "all 20 values are numbers (30 empty or NA)"}
    assert infer_kind(col(["NA", "?"] * 10))["kind"] == "categorical"  # no number at all


def test_categorical_by_cardinality():
    assert infer_kind(col(["a", "b", "c"] * 20)) == {"kind": "categorical", "reason": "3 distinct values"}
    assert infer_kind(col([f"v{i % 60}" for i in range(200)]))["kind"] == "categorical"  # 60 of 200: at most half
    assert infer_kind(col([f"v{i % 60}" for i in range(100)]))["kind"] == "text"  # 60 of 100: more than half


def test_constant_empty_and_id_like_columns_are_dropped():
    assert infer_kind(col(["x"] * 10 + [""] * 3)) == {"kind": "drop", "reason": "constant: every filled value is 'x'"}
    assert infer_kind(col([""] * 5)) == {"kind": "drop", "reason": "empty in every row"}
    codes = infer_kind(col([f"K{i:05d}Z" for i in range(100)]))
    assert codes["kind"] == "drop" and codes["reason"].startswith("id-like: each of the 100 values")
    index = infer_kind(col(np.random.default_rng(0).permutation(np.arange(1, 121))))
    assert index == {"kind": "drop", "reason": "id-like: 120 different whole numbers from 1 to 120 (a running index)"}
    spread = infer_kind(col(np.random.default_rng(0).choice(100_000, 120, replace=False)))
    assert spread["kind"] == "numeric"  # all different but far apart: a measurement, not an index
    assert infer_kind(col(range(10)))["kind"] == "numeric"  # too few rows to call it an index


def test_free_text_and_many_valued_codes_become_text():
    rng = np.random.default_rng(0)
    words = np.array(["red", "green", "blue", "car", "fast", "old", "house", "by", "the", "sea"])
    sentences = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(80)]
    free = infer_kind(col(sentences))
    assert free["kind"] == "text" and free["reason"].startswith("free text (80 distinct values of 80, 5.0 words")
    tickets = [f"T{i % 70}" for i in range(100)]  # 70 of 100 distinct, some repeat: not an id
    assert infer_kind(col(tickets)) == {"kind": "text", "reason": "70 distinct short values of 100: too many for "
                                                                  "categories; kit uses their length and word count"}


def test_dates_in_common_formats_and_numbers_never_dates():
    iso = infer_kind(col(["2011-01-01 00:00:00", "2011-01-01 01:00:00", "", "2012-12-19 23:00:00"] * 5))
    assert iso["kind"] == "date" and iso["format"] == "ISO8601"
    assert infer_kind(col(["13/02/2020", "01/03/2021", "28/12/2019"] * 10))["format"] == "%d/%m/%Y"
    assert infer_kind(col(["02/13/2020", "03/01/2021"] * 10))["format"] == "%m/%d/%Y"
    assert infer_kind(col(["20200105", "20200106", "20210301"] * 10))["kind"] == "numeric"
    assert infer_kind(col(["2019", "2020", "2021"] * 10))["kind"] == "numeric"
    assert infer_kind(col(["jan", "feb", "may", "3rd"] * 10))["kind"] == "categorical"  # dateutil would say dates
    mostly = [f"2020-01-{d:02d}" for d in range(1, 29)] + ["soon", "later"]  # 28 of 30 = 93% < 95%
    assert date_format(col(mostly)) is None and infer_kind(col(mostly))["kind"] != "date"


def test_date_parts_values():
    values = col(["2011-01-01 00:00:00", "", "2012-02-29 13:00:00", "junk"])
    parts = date_parts(values, "ISO8601")
    expected = pd.DataFrame({"year": [2011, np.nan, 2012, np.nan], "month": [1, np.nan, 2, np.nan],
                             "day": [1, np.nan, 29, np.nan], "dayofweek": [5, np.nan, 2, np.nan],
                             "dayofyear": [1, np.nan, 60, np.nan], "hour": [0, np.nan, 13, np.nan]}, dtype=float)
    pd.testing.assert_frame_equal(parts, expected)
    assert "hour" not in date_parts(values, "ISO8601", hour=False)
    days = date_parts(col(["05/01/2020", "31/12/2020"]))  # format found, no hours: no hour column
    assert list(days.columns) == ["year", "month", "day", "dayofweek", "dayofyear"]
    assert days.to_numpy().tolist() == [[2020, 1, 5, 6, 5], [2020, 12, 31, 3, 366]]


def test_text_features_values():
    out = text_features(col(["Braund, Mr. Owen Harris", "", "C23 C25  C27", "x"]))
    expected = pd.DataFrame({"chars": [23, np.nan, 12, 1], "words": [4, np.nan, 3, 1]}, dtype=float)
    pd.testing.assert_frame_equal(out, expected)


def test_infer_kinds_skips_and_covers_every_other_column():
    frame = pd.DataFrame({"id": col(range(30)), "y": col([0, 1] * 15), "a": col(["p", "q", "r"] * 10),
                          "b": col(np.linspace(0, 1, 30))})
    kinds = infer_kinds(frame, skip=["id", "y"])
    assert {k: v["kind"] for k, v in kinds.items()} == {"a": "categorical", "b": "numeric"}


def test_a_large_table_is_handled():
    n = 200_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "num": col(rng.normal(size=n).round(3)),
        "cat": col(np.array(["red", "green", "blue"])[rng.integers(0, 3, n)]),
        "when": col(pd.date_range("2000-01-01", periods=n, freq="h").astype(str)),
        "note": col([f"item {i} of the lot" for i in rng.integers(0, n, n)]),
    })
    kinds = infer_kinds(frame)
    assert {k: v["kind"] for k, v in kinds.items()} == {"num": "numeric", "cat": "categorical", "when": "date",
                                                        "note": "text"}
    parts = date_parts(frame["when"], kinds["when"]["format"])
    assert parts.shape == (n, 6) and parts["hour"].iloc[25] == 1.0 and not parts.isna().any().any()
    text = text_features(frame["note"])
    assert text.shape == (n, 2) and (text["words"] == 5).all()


@pytest.mark.parametrize("values", [["a", "b"], ["1", "2"]])
def test_kinds_are_deterministic(values):
    column = col(values * 20_000)
    assert infer_kind(column) == infer_kind(column.copy())


def test_typed_holds_a_float_only_for_numbers_in_their_own_writing():
    frame = pd.DataFrame({"whole": col(["1", "2", None, "3"]), "floaty": col(["3.0", "2.5", "-1", "1e-05"]),
                          "inf": col(["0.1", "inf", None, "7"]), "padded": col(["01", "2", "3", "4"]),
                          "trailing": col(["1.50", "2", "3", "4"]),
                          "long": col(["12345678901234567890", "1", "2", "3"]),
                          "plus": col(["+3", "1", "2", "3"]), "na": col(["NA", "1", "2", "3"]),
                          "word": col(["a", "b", "a", None]), "id": col(["1", "2", "3", "4"])})
    out = typed(frame, keep=["id"])
    floats = [c for c in out.columns if out[c].dtype == np.float64]
    assert floats == ["whole", "floaty", "inf"]
    assert out["floaty"].tolist() == [3.0, 2.5, -1.0, 1e-05] and np.isnan(out["whole"].iloc[2])
    for column in frame.columns.drop(floats):  # text columns keep every value's writing
        assert out[column].fillna("-").tolist() == frame[column].fillna("-").tolist()
    assert as_text(out["floaty"]).tolist() == ["3", "2.5", "-1", "1e-05"]  # a number's keys: one writing each
    words = frame["word"]
    assert as_text(out["inf"]).tolist()[:2] == ["0.1", "inf"] and as_text(words) is words
    assert out["word"].iloc[0] is out["word"].iloc[2]  # one shared string per distinct value


def test_a_typed_table_encodes_exactly_as_its_text():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "x": col(np.round(rng.normal(size=n), 4)), "count": col(rng.integers(0, 9, n)),
        "gaps": col(np.where(rng.random(n) < 0.2, None, rng.integers(0, 99, n).astype(str))),
        "odd": col(np.where(rng.random(n) < 0.1, "NA", rng.integers(0, 9, n).astype(str))),
        "huge": col(np.where(rng.random(n) < 0.05, "inf", rng.normal(size=n).round(2).astype(str))),
        "grade": col(rng.integers(1, 4, n)), "colour": col(np.array(["red", "blue", None])[rng.integers(0, 3, n)]),
        "when": col(pd.date_range("2020-01-01", periods=n, freq="D").astype(str)),
    })
    y = rng.integers(0, 2, n)

    class Spec:  # the automatic encoding, with a column of numbers forced categorical
        raw_numeric, raw_text, numeric, drop, categorical = [], [], [], [], ["grade"]

    text_state, typed_state = fit_encoding(frame, Spec, y, 2), fit_encoding(typed(frame), Spec, y, 2)
    assert text_state == typed_state
    assert typed(frame)["grade"].dtype == np.float64 and text_state["ordinal"]["grade"].keys() == {"1", "2", "3"}
    np.testing.assert_array_equal(encode(frame, text_state), encode(typed(frame), typed_state))

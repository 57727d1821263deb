"""Column kinds inferred from a table read as text (`read_table`: strings, empty -> NaN): numeric, categorical,
text, date or drop, each with a short reason; and the numbers kit makes of date and text columns.

numpy and pandas only: serving code imports it.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

CATEGORIES = 50  # at most this many distinct values: categorical, whatever the table's size
MAX_CATEGORIES = 1000  # above this, or above half the filled rows, a text column is not categorical
FREE_TEXT_WORDS = 3.0  # mean words per value from which a many-valued column is free text
DATE_SHARE = 0.95  # share of the filled values that must parse as dates in one format
INDEX_MIN_ROWS = 20  # fewer filled rows than this are never judged a running index
NA_TOKENS = ("na", "n/a", "nan", "null", "none", "?", "-")  # in a column of numbers, these mean missing
SAMPLE = 10_000  # filled values examined for words and date formats (a fixed sample: deterministic, fast)
# Explicit formats, tried in order (a tie goes to the first): dateutil's free parsing would read "jan" or "3rd" as
# this year's dates. Numbers never get here: a column of numbers is numeric before dates are tried.
DATE_FORMATS = ("ISO8601", "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                "%d/%m/%Y %H:%M:%S", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d-%m-%Y",
                "%m/%d/%y", "%d-%b-%Y", "%d-%b-%y", "%d %b %Y", "%b %d, %Y", "%d %B %Y", "%B %d, %Y")


def infer_kinds(frame: pd.DataFrame, skip: Collection[str] = ()) -> dict[str, dict]:
    """{column: {"kind": numeric|categorical|text|date|drop, "reason": ...}} for the columns not in `skip`;
    a date column also gets its "format" (for `date_parts`)."""
    return {str(name): infer_kind(frame[name]) for name in frame.columns if name not in skip}


def infer_kind(values: pd.Series) -> dict:
    """The kind of one column of strings (NaN = empty), with the reason."""
    filled = values.dropna()
    unique = pd.Series(filled.unique())  # parsed once each: a column of counts has few distinct strings
    n, distinct = len(filled), len(unique)
    if n == 0:
        return _kind("drop", "empty in every row")
    if distinct == 1:
        return _kind("drop", f"constant: every filled value is {as_text(filled).iloc[0]!r}")
    number = pd.to_numeric(unique, errors="coerce").astype(float)
    token = number.isna()  # "NA" in a column of numbers: missing (only what is not a number is looked at)
    token[token] = unique[token].astype(str).str.strip().str.lower().isin(NA_TOKENS)
    finite = np.isfinite(number)
    if finite.any() and (number.notna() | token).all():
        return _numeric_kind(values, filled, unique, number, token, finite)
    sample = filled.sample(SAMPLE, random_state=0) if n > SAMPLE else filled
    fmt = date_format(sample)
    if fmt:
        return {**_kind("date", f"dates ({fmt}); kit uses year, month, day, weekday, day of year (+ hour)"),
                "format": fmt}
    if distinct <= CATEGORIES or (distinct <= MAX_CATEGORIES and distinct <= n / 2):
        return _kind("categorical", f"{distinct:,} distinct values")
    words = float(sample.astype(str).str.count(r"\S+").mean())
    if words >= FREE_TEXT_WORDS:
        return _kind("text", f"free text ({distinct:,} distinct values of {n:,}, {words:.1f} words on average); "
                             "kit uses its length and word count")
    if distinct == n:
        return _kind("drop", f"id-like: each of the {n:,} values is different, and not free text")
    return _kind("text", f"{distinct:,} distinct short values of {n:,}: too many for categories; "
                         "kit uses their length and word count")


def _numeric_kind(values: pd.Series, filled: pd.Series, unique: pd.Series, number: pd.Series, token: pd.Series,
                  finite: pd.Series) -> dict:
    """A column of numbers: numeric, or dropped as a running index. NA tokens and values too large for a float
    (inf, 1e999) are read as missing, and the reason says how many."""
    marked = filled.isin(unique[token].tolist()).sum() if token.any() else 0
    huge = unique[number.notna() & ~finite]
    infinite = int(filled.isin(huge.tolist()).sum())
    n, number = len(filled) - marked - infinite, number[finite]
    low, high = number.min(), number.max()
    if (n >= INDEX_MIN_ROWS and len(number) == n and (number == np.round(number)).all()
            and high - low + 1 <= 2 * n):
        return _kind("drop", f"id-like: {n:,} different whole numbers from {low:.0f} to {high:.0f} (a running index)")
    empty = len(values) - len(filled) + marked
    notes = [f"{empty:,} empty{' or NA' if marked else ''}"] if empty else []
    example = as_text(huge).iloc[0] if infinite else None
    notes += [f"{infinite:,} infinite or too large for a float, e.g. {example!r}, read as missing"] if infinite else []
    return _kind("numeric", f"all {n:,} values are numbers" + (f" ({'; '.join(notes)})" if notes else ""))


def typed(frame: pd.DataFrame, keep: Collection[str] = ()) -> pd.DataFrame:
    """`frame` (text, as `read_table` reads it) with each column not in `keep` whose filled values are all numbers
    in a float's own writing held as float64: parsed once, 8 bytes a cell instead of a string. A float's own writing
    is its shortest round-trip text ("0.25", "1e-05", "inf"), and for a whole number also its integer form ("3",
    "3.0"). Any other writing ("01", "1.50", "+3", "NA", digits beyond a float's) keeps its column as text, so no
    two different texts ever become one number: the column reads the same either way (`numbers`, `as_text`)."""
    return frame.assign(**{str(c): _typed(frame[c]) for c in frame.columns if c not in keep})


def _typed(values: pd.Series) -> pd.Series:
    """One column as float64 (see `typed`), or as the same text with each distinct value one shared string."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    codes, distinct = pd.factorize(values)  # each distinct text judged once; codes -1: missing
    written = np.asarray(distinct, dtype=object)
    number = pd.to_numeric(pd.Series(written), errors="coerce").to_numpy(dtype=float)
    own = not np.isnan(number).any()
    if own:
        canonical, shortest = _writings(number)
        own = bool(((written == canonical) | (written == shortest)).all())
    column = np.append(number, np.nan) if own else np.append(written, np.nan)
    return pd.Series(column[codes], index=values.index, name=values.name, dtype=float if own else values.dtype)


def as_text(values: pd.Series) -> pd.Series:
    """A column as text: a float as its integer form when whole ("3"), else its shortest round-trip text ("0.25",
    "1e-05", "inf"); text as it is. NaN stays NaN."""
    if not pd.api.types.is_float_dtype(values):
        return values
    return pd.Series(_writings(values.to_numpy())[0], index=values.index, name=values.name)


def _writings(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the integer form where whole else the shortest round-trip text, the shortest round-trip text) of floats."""
    shortest = np.array(list(map(repr, x.tolist())), dtype=object)
    shortest[np.isnan(x)] = np.nan
    whole = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < 2**53)
    canonical = shortest.copy()
    canonical[whole] = x[whole].astype(np.int64).astype(str)
    return canonical, shortest


def numbers(values: pd.Series) -> pd.Series:
    """A column as floats: what is not a finite number (text, NA, inf, 1e999) is NaN, i.e. missing."""
    number = pd.to_numeric(values, errors="coerce").astype(float)
    return number.where(np.isfinite(number))


def date_format(values: pd.Series) -> str | None:
    """The format of `DATE_FORMATS` that parses the most of `values` (at least DATE_SHARE of the filled ones, judged
    on a fixed sample)."""
    filled = values.dropna()
    filled = filled.sample(SAMPLE, random_state=0) if len(filled) > SAMPLE else filled
    if filled.empty or not filled.astype(str).str.contains(r"\d").all():
        return None
    best, share = None, DATE_SHARE
    for fmt in DATE_FORMATS:
        parsed = _to_datetime(filled, fmt).notna().mean()
        if parsed > share or (best is None and parsed >= share):
            best, share = fmt, parsed
        if share == 1.0:
            break
    return best


def date_parts(values: pd.Series, format: str | None = None, hour: bool | None = None) -> pd.DataFrame:
    """Float columns year, month, day, dayofweek, dayofyear (+ hour; None: when the hours vary), NaN where a value
    is missing or not a date. `format` as `date_format` finds it (None: found here)."""
    stamps = _to_datetime(values, format or date_format(values) or "ISO8601")
    dt = stamps.dt
    parts = {"year": dt.year, "month": dt.month, "day": dt.day, "dayofweek": dt.day_of_week,
             "dayofyear": dt.day_of_year}
    if hour or (hour is None and dt.hour.nunique() > 1):
        parts["hour"] = dt.hour
    return pd.DataFrame({k: v.astype(float) for k, v in parts.items()}, index=values.index)


def text_features(values: pd.Series) -> pd.DataFrame:
    """Float columns chars (length) and words (count of whitespace-separated words), NaN where a value is missing."""
    text = values.astype("string")
    return pd.DataFrame({"chars": text.str.len().astype(float), "words": text.str.count(r"\S+").astype(float)},
                        index=values.index)


def _to_datetime(values: pd.Series, fmt: str) -> pd.Series:
    return pd.to_datetime(values.astype("string"), format=fmt, errors="coerce", utc=True)


def _kind(kind: str, reason: str) -> dict:
    return {"kind": kind, "reason": reason}

"""Input contracts: how raw input (table rows, image files) becomes the exported graph's input.

`make export` writes a task's contract into meta.json["input"] (`describe_table`, `describe_images`); kit.runtime
reads it back (`open_input`) and training uses the same functions, so what was trained is what is served. numpy,
pandas and Pillow only: a serving machine needs no torch.

Trust: a tabular export may carry its competition's feature code (features.py, its sha256 in meta.json). That code
runs only when the caller passes `trust_code=True`, and only if the file is inside the export folder and still has
the recorded sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.columns import as_text, numbers
from kit.encoding import encode_folds
from kit.errors import KitError
from kit.images import decode

log = logging.getLogger(__name__)

CATEGORIES = 20  # a text column with at most this many distinct training values is offered as a choice


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_numeric(frame: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame:
    """Columns as floats (empty -> NaN; inf and values too large for a float are missing too, as in training); a
    value that is not a number is refused with its line."""
    frame = frame.copy()
    for column in columns:
        text = frame[column]
        number = pd.to_numeric(text, errors="coerce")
        bad = text.notna() & number.isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise KitError(f"{where}: column {column!r} must be numeric, but line {row + 2} holds {text.iloc[row]!r} "
                           "(leave missing values empty)")
        frame[column] = numbers(number)
        infinite = number.notna() & frame[column].isna()
        if infinite.any():
            row = int(infinite.to_numpy().argmax())
            log.warning("%s: column %r holds %d infinite or too large value(s) (line %d: %r), read as missing",
                        where, column, int(infinite.sum()), row + 2, text.iloc[row])
    return frame


def load_engineer(path: Path) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`engineer(df)` from a feature file (this executes the file)."""
    if not path.is_file():
        raise KitError(f"feature code not found: {path}; fix features.code in the competition config")
    spec = importlib.util.spec_from_file_location(f"kit_features_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "engineer"):
        raise KitError(f"{path} must define engineer(df) -> DataFrame")
    return module.engineer


def describe_table(raw: pd.DataFrame, names: list[str], numeric: list[str], states: list[dict], id_column: str,
                   width: int, code: dict | None) -> dict:
    """meta.json["input"] of a tabular export: the raw columns a row needs (with what training saw of them, for
    forms and checks; `numeric` are numbers, the rest text), the feature file (name and sha256, copied into the
    export), and the fitted encodings."""
    columns = [_numeric_column(numbers(raw[c]), c) if c in numeric else _text_column(raw[c], c)
               for c in names]
    return {"kind": "table", "name": "features", "dtype": "float32", "layout": "NF", "shape": ["N", width],
            "id": id_column, "columns": columns, "code": code,
            "encoding": {"folds": states,
                         "meaning": "each fold's encoding of the engineered row, side by side (kit/encoding.py)"}}


def describe_images(size: int, mean: list[float], std: list[float]) -> dict:
    """meta.json["input"] of an image export: uint8 RGB pictures resized to size x size; the graph does the rest."""
    return {"kind": "image", "name": "images", "dtype": "uint8", "layout": "NHWC", "shape": ["N", size, size, 3],
            "size": [size, size], "color": "RGB",
            "resize": f"convert to RGB (alpha on white), resize to {size}x{size} ignoring aspect ratio, bilinear "
                      "(PIL Image.resize(..., BILINEAR)); the graph does scaling, normalisation, TTA",
            "normalization": {"mean": mean, "std": std, "applied_in_graph": True}}


def numbers_only(values: pd.Series) -> bool:
    """Whether a raw column holds numbers only (parsed already, or text that parses), with at least one."""
    if pd.api.types.is_numeric_dtype(values):
        return True
    seen = values.dropna()
    return len(seen) > 0 and bool(pd.to_numeric(seen, errors="coerce").notna().all())


def _numeric_column(values: pd.Series, name: str) -> dict:
    seen = values.dropna()
    whole = bool(len(seen)) and bool((seen == seen.round()).all())
    return {"name": name, "type": "number", "integer": whole, "missing": bool(values.isna().any()),
            "min": float(seen.min()) if len(seen) else None, "max": float(seen.max()) if len(seen) else None,
            "default": float(seen.median()) if len(seen) else None}


def _text_column(values: pd.Series, name: str) -> dict:
    """A text column; its default is the most common value, or missing (None) when most training rows lack it."""
    counts = values.dropna().astype(str).value_counts()
    choices = sorted(counts.index.tolist()) if 0 < len(counts) <= CATEGORIES else None
    usual = str(counts.index[0]) if len(counts) and values.notna().mean() >= 0.5 else None
    return {"name": name, "type": "text", "categories": choices, "missing": bool(values.isna().any()),
            "default": usual}


class TableInput:
    """Raw rows (a dict, a list of dicts, or a DataFrame) -> the exported graph's float32 input."""

    def __init__(self, contract: dict, folder: Path, trust_code: bool):
        self.contract = contract
        self.columns = [c["name"] for c in contract["columns"]]
        self.numeric = [c["name"] for c in contract["columns"] if c["type"] == "number"]
        self.engineer = _trusted_engineer(contract.get("code"), folder, trust_code) if contract.get("code") else None

    def items(self, rows: Any) -> list | pd.DataFrame:
        """`rows` as a sequence of rows (a list of dicts, or the DataFrame), which `chunks` can cut."""
        if isinstance(rows, dict):
            rows = [rows]
        if isinstance(rows, (str, bytes)) or not isinstance(rows, (list, tuple, pd.DataFrame)) or len(rows) == 0:
            raise KitError(f"give table rows as a dict, a list of dicts or a DataFrame with columns {self.columns}")
        return rows if isinstance(rows, pd.DataFrame) else list(rows)

    def prepare(self, rows: Any) -> np.ndarray:
        frame = pd.DataFrame(self.items(rows))
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise KitError(f"rows lack column(s) {missing}; expected {self.columns}")
        frame = frame[self.columns].astype(object).where(frame[self.columns].notna(), None)
        for column in set(self.columns) - set(self.numeric):
            frame[column] = _cells_as_text(frame[column])
        frame = parse_numeric(frame, self.numeric, "input rows")
        engineered = self.engineer(frame) if self.engineer else frame
        return encode_folds(engineered, self.contract["encoding"]["folds"])


def _cells_as_text(values: pd.Series) -> pd.Series:
    """A text column's cells as strings (a float as training's typed reader writes it back: 3.0 -> "3"), a missing
    or empty one as None."""
    cells = values.to_numpy(dtype=object).copy()
    floats = np.array([isinstance(v, float) for v in cells], dtype=bool)
    if floats.any():
        cells[floats] = as_text(pd.Series(cells[floats], dtype=float)).to_numpy()
    return pd.Series([None if v is None or v == "" or v != v else str(v) for v in cells], index=values.index,
                     dtype=object)


class ImageInput:
    """Images (paths, PIL images, uint8 HxWx3 arrays) -> the exported graph's uint8 NHWC input."""

    def __init__(self, contract: dict):
        self.size = int(contract["size"][0])

    def items(self, images: Any) -> list:
        """`images` as a list (one image as a list of one), which `chunks` can cut."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise KitError("no images given")
        return images

    def prepare(self, images: Any) -> np.ndarray:
        return np.stack([self._image(image) for image in self.items(images)])

    def _image(self, item: Any) -> np.ndarray:
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] not in (3, 4):
                raise KitError(f"an image array must be uint8 HxWx3 (RGB); got {item.dtype} {item.shape}")
            if item.shape[:2] == (self.size, self.size) and item.shape[2] == 3:
                return item
            from PIL import Image

            item = Image.fromarray(item)
        try:
            return decode(item, self.size)
        except ValueError as exc:
            name = item if isinstance(item, (str, os.PathLike)) else "the image"
            raise KitError(f"cannot read {name} as an image ({exc})") from None


def chunks(items: list | pd.DataFrame, size: int) -> list:
    """Consecutive pieces of at most `size` items of a list or rows of a DataFrame (by position)."""
    rows = items.iloc if isinstance(items, pd.DataFrame) else items
    return [rows[start : start + size] for start in range(0, len(items), size)]


def open_input(meta: dict, folder: Path, trust_code: bool = False) -> TableInput | ImageInput:
    """The raw-input side of the export in `folder` (meta.json already read)."""
    contract = meta["input"]
    if contract.get("kind") == "table":
        return TableInput(contract, folder, trust_code)
    if contract.get("kind") == "image":
        return ImageInput(contract)
    raise KitError(f"{folder / 'meta.json'}: unknown input kind {contract.get('kind')!r}; re-run `make export`")


def _trusted_engineer(code: dict, folder: Path, trust_code: bool) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The export's feature code, run only with the caller's consent and only as recorded in meta.json."""
    name = str(code.get("file", ""))
    path = folder / name
    if not name or Path(name).name != name or name in (".", ".."):
        raise KitError(f"{folder / 'meta.json'} names feature code {name!r} outside the export folder; "
                       "an export only reads its own files; re-run `make export`")
    if not trust_code:
        raise KitError(f"{folder} runs its feature code {name} (sha256 {str(code.get('sha256'))[:12]}...) to turn "
                       "raw rows into features; load it with kit.runtime.load(path, trust_code=True) (app: "
                       "--trust-code) if you trust whoever made this export")
    if not path.is_file() or sha256(path) != code.get("sha256"):
        raise KitError(f"{path} is missing or does not match the sha256 in meta.json (modified or corrupt); "
                       "refusing to run it; re-run `make export`")
    return load_engineer(path)

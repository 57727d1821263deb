"""Image files: folder layouts, robust decoding, and the decoded-image cache reused by every epoch and fold."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from kit import atomic
from kit.errors import KitError

log = logging.getLogger(__name__)

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MIN_SIDE = 8  # smaller pictures carry nothing to classify (a 1x1 image is a broken export, not a photo)
SPLIT_NAMES = {"train": ("train", "training"), "valid": ("valid", "validation", "val")}


def decode(source: str | os.PathLike | Image.Image, size: int) -> np.ndarray:
    """Read any RGB/grey/CMYK/alpha image (a file or a PIL image) as uint8 [size, size, 3] RGB, aspect squashed.

    Large JPEG files are decoded reduced (Pillow's draft mode), never at full size; transparency is
    composited on white. Raises ValueError with the reason for unreadable files.
    """
    try:
        if isinstance(source, Image.Image):
            return _to_rgb_square(source, size)
        with Image.open(source) as image:
            image.draft("RGB", (size, size))  # JPEG: DCT scaling to the smallest scale >= size
            return _to_rgb_square(image, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def _to_rgb_square(image: Image.Image, size: int) -> np.ndarray:
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"the image is {image.size[0]}x{image.size[1]} pixels, too small to classify "
                         f"(at least {MIN_SIDE}x{MIN_SIDE})")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def split_folders(root: Path) -> dict[str, Path]:
    """The train/ and (optional) valid/ folders under `root` (also training/, validation/)."""
    if not root.is_dir():
        raise KitError(f"image data folder not found: {root}; point DATA=... at a folder with train/ (and valid/)")
    found = {}
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    if "train" not in found:
        raise KitError(f"{root} has no train/ folder; expected train/ (and valid/) holding {{label}}_{{idx}}.jpg "
                       "files or one sub-folder per class")
    return found


def list_labelled(folder: Path, classes: list[str]) -> tuple[list[Path], list[int], list[str]]:
    """Image files with labels from the HW3 name `{label}_{idx}.jpg` or from class sub-folders.

    Returns (paths, labels, skipped) where skipped describes files that carry no usable label.
    """
    paths, labels, skipped = [], [], []
    by_name = {name: i for i, name in enumerate(classes)}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() not in EXTENSIONS:
            skipped.append(f"{path.name} (not an image extension)")
            continue
        if path.parent != folder:  # class sub-folder layout: the folder name is the class (or its index)
            label = by_name.get(path.parent.name)
            if label is None and path.parent.name.isdigit() and int(path.parent.name) < len(classes):
                label = int(path.parent.name)
        else:
            head = path.stem.split("_")[0]
            label = int(head) if head.isdigit() and "_" in path.stem and int(head) < len(classes) else None
        if label is None:
            skipped.append(f"{path.relative_to(folder)} (no label in name or folder)")
            continue
        paths.append(path)
        labels.append(label)
    return paths, labels, skipped


def list_unlabelled(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise KitError(f"test image folder not found: {folder}; point TEST=... at a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not paths:
        raise KitError(f"{folder} holds no images ({', '.join(sorted(EXTENSIONS))})")
    return paths


def cached_decode(paths: list[Path], size: int, cache_dir: Path, workers: int = 2) -> tuple[np.ndarray, dict[int, str]]:
    """Decode `paths` once into a memory-mapped uint8 [N, size, size, 3] array, reused while no file changes.

    The cache key covers the file list, sizes and modification times, and the decode size. Returns the
    array and {index: reason} for the files that could not be decoded (their rows are zeros).
    """
    key = _cache_key(paths, size)
    array_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if array_path.is_file() and meta_path.is_file():
        log.info("image cache hit: %d images at %dpx (%s)", len(paths), size, array_path)
        return np.load(array_path, mmap_mode="r"), {int(i): why for i, why in json.loads(meta_path.read_text())["bad"]}
    cache_dir.mkdir(parents=True, exist_ok=True)
    bad: dict[int, str] = {}
    with atomic.atomic_path(array_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
            results = pool.map(_decode_or_none, [str(p) for p in paths], [size] * len(paths), chunksize=16)
            for i, image in enumerate(tqdm(results, total=len(paths), desc="decoding", unit="img", disable=None)):
                if isinstance(image, str):
                    bad[i] = image
                else:
                    out[i] = image
        out.flush()
        del out
    atomic.write_text(meta_path, json.dumps({"count": len(paths), "size": size, "bad": list(bad.items())}))
    return np.load(array_path, mmap_mode="r"), bad


def _decode_or_none(path: str, size: int) -> np.ndarray | str:
    try:
        return decode(path, size)
    except ValueError as exc:
        return str(exc)


def _cache_key(paths: list[Path], size: int) -> str:
    digest = hashlib.sha256(f"v2 {size}".encode())
    for p in paths:
        stat = p.stat()
        digest.update(f"\n{p.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


class _Serial:
    """ProcessPoolExecutor's map, in this process (for workers=1)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, *iterables, chunksize: int = 1):  # noqa: ARG002 - same signature as the executor
        return map(fn, *iterables)
